"""detection-agent: edge real-time object detection agent."""
