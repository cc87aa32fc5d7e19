"""Who receives which events: the subscription store and event filters."""
