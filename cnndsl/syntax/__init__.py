"""Text to AST: the grammar in grammars/cnndsl.lark and frozen nodes mirroring it."""

from cnndsl.syntax.parser import parse

__all__ = ["parse"]
