"""Built-in YAML configs, installed as the package data ``imgsynth.configs``."""
