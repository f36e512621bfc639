"""HTTP inference service for gwm: image segmentation and per-video test-time adaptation."""
