"""The durable ledger: schema and migrations, the database engines, the SQLite writer and the store that runs every SQL statement."""
