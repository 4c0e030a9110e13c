"""Test-wide settings: quiet TensorFlow, and 8 simulated CPU devices for sharding tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
