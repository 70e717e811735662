"""efm_sim: MuJoCo simulation domains and scripted demonstrators (paper Appendix D).

PointMass (the paper's pointmass notebook), PushTable (LanguageTable-like) and
BananaTable, plus the episode dataset format. Knows nothing of ROS.
"""

__version__ = "0.1.0"
