"""The wallet's HTTP API: accounts, top-ups, debits and subscriptions."""
