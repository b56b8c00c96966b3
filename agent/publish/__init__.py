"""MQTT publishing: topics and payloads, the on-disk spool, commands, recording.

``MqttPublisher`` (agent.publish.mqtt) is what the pipeline uses; its module docstring
documents the API. The topic contract is in docs/mqtt.md and schemas/*.json. Submodules
are imported where they are used, so ``import agent.publish`` costs nothing.
"""
