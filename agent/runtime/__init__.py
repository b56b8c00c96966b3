"""The daemon: pipeline threads, service integration, stats and sinks (MQTT, video, preview)."""
