"""Delivery orchestration: the queue channels submit to, the worker that registers due contacts, and outcome notifications."""
