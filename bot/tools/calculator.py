"""A safe calculator for the model: arithmetic parsed with ``ast`` and evaluated node by node, never ``eval``.

Only numbers, + - * / // % **, parentheses, a few math functions and the constants pi, e and tau are allowed;
anything else (names, attributes, calls of other things, strings, comprehensions) is refused. Sizes are capped so
that no expression can take long: the text's length, the number of nodes, exponents, and the digits of integers.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from bot.tools.functions import ToolError

MAX_CHARS = 300
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_INT_BITS = 10_000  # about 3,000 decimal digits

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp,
    "ln": math.log,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "degrees": math.degrees,
    "radians": math.radians,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": min,
    "max": max,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (integers) or to double precision, safely.

    Args:
        expression: Numbers with + - * / // % ** and parentheses, the functions sqrt, cbrt, exp, ln, log, log10,
            log2, sin, cos, tan, asin, acos, atan, degrees, radians, abs, round, floor, ceil, min and max, and the
            constants pi, e and tau. For example "2 * (3 + 4) ** 2" or "sqrt(2) / 3".
    """
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise ToolError(f"the expression is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise ToolError(f"cannot read {expression!r} as arithmetic") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"the expression has more than {MAX_NODES} parts")
    try:
        value = _eval(tree.body)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("the result is too large") from exc
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from exc
    return _format(value)


def _eval(node: ast.AST) -> Any:
    match node:
        case ast.Constant(value=value) if type(value) in (int, float):
            return value
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            a, b = _eval(left), _eval(right)
            if isinstance(op, ast.Pow):
                _check_power(a, b)
            return _checked(_BINARY[type(op)](a, b))
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_eval(operand))
        case ast.Name(id=name) if name in _CONSTANTS:
            return _CONSTANTS[name]
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in _FUNCTIONS and args:
            values = [_eval(arg) for arg in args]
            return _checked(_FUNCTIONS[name](*values))
        case ast.Name(id=name):
            raise ToolError(f"unknown name {name!r}: only numbers, operators, math functions and pi, e, tau")
        case ast.Attribute():
            raise ToolError("attribute access is not allowed")
        case ast.Call():
            raise ToolError(f"only these functions can be called: {', '.join(_FUNCTIONS)}")
        case _:
            raise ToolError(f"{type(node).__name__} is not allowed in a calculation")


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse powers whose result would be huge before computing them."""
    if isinstance(exponent, float) and not math.isfinite(exponent):
        return
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent {exponent:g} is too large (the limit is {MAX_EXPONENT})")
    whole = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if whole and abs(base) > 1 and base.bit_length() * exponent > MAX_INT_BITS:
        raise ToolError("the result would have too many digits")


def _checked(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("the result is not a number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result would have too many digits")
    return value


def _format(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)
