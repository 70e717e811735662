"""efm_ros: thin rclpy adapters around efm_learning and efm_sim (paper Appendix J)."""

__version__ = "0.1.0"
