"""Teachers that PULSE students learn from; BirdNET V2.4 run with LiteRT, and its output cache."""
