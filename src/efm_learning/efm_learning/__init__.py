"""efm_learning: the learning core of efm (paper Sections 2-3, Appendices A-C, E).

Embodied foundation models, Stage 1 supervised fine-tuning (behavioural cloning and
steps-to-go prediction) and Stage 2 Self-Improvement (Algorithm 1). Knows nothing of ROS.
"""

__version__ = "0.1.0"
