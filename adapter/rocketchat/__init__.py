"""Everything about talking to Rocket.Chat: requests and answers as pure code (``sansio``, ``windows``), the pacer, the client and the registration strategies."""
