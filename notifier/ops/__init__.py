"""What operators do: inspect, redeliver, recover, replay, and retention."""
