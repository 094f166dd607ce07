"""Helpers of the Hydra entry points: config checks, node instantiation, the config tree, sweep summaries."""

from seqforge.utils.config import ConfigError, check_config, compose_config, instantiate_node, print_config_tree

__all__ = ["ConfigError", "check_config", "compose_config", "instantiate_node", "print_config_tree"]
