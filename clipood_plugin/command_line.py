"""What every `clipood` command shares on the command line: the parser that names the closest options to a
wrong one, and the one-line error."""
import argparse
import difflib
import sys


class Parser(argparse.ArgumentParser):
    """An argument no option takes is an error of the (sub)command whose arguments it is among: its usage
    is shown, with the closest option names (argparse leaves it to the top-level parser, which shows its
    own usage and no suggestion)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            options = [option for action in self._actions for option in action.option_strings]
            close = [match for extra in extras if extra.startswith("-")
                     for match in difflib.get_close_matches(extra.split("=", 1)[0], options, n=1)]
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        return namespace, extras


def fail(command, error, status=2):
    """`clipood COMMAND: error: ...` on stderr; ``status``, by default the exit code of bad input (a run that
    failed, not its input, exits 1)."""
    print(f"clipood {command}: error: {error}", file=sys.stderr)
    return status
