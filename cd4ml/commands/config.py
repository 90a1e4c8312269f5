"""Print the resolved configuration: defaults, then CD4ML_* environment variables, then flags."""

from cd4ml.commands.common import add_config_flags, config_from

HELP = "print the resolved configuration and where each value can be set"


def register(parser):
    add_config_flags(parser)


def main(args) -> int:
    config = config_from(args)
    for key, value in config.as_dict().items():
        print(f"{key:26s} {value!s:50s} CD4ML_{key.upper()}")
    return 0
