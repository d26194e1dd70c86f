"""A safe subset of JEXL, the expression language of the FIWARE IoT Agents (never ``eval``).

Expressions derive attribute values from a measure, as the IoT Agents' ``expression`` field does
(``t * 1.8 + 32``, ``status == "1" ? "on" : "off"``, ``name|toUpperCase``). They are parsed once
into a small tree when provisioned (a syntax error is refused there, with its position) and
evaluated against the measure's values; nothing in them can reach Python objects, the clock or
the network.

Supported:

- literals: numbers, strings in ``'…'`` or ``"…"`` (``\\`` escapes), ``true``, ``false``, ``null``,
  arrays ``[a, b]``;
- names: the measure's values (by object id and by attribute name) and the device's static
  attributes, plus ``id``, ``type``, ``service``, ``subservice``, ``entity_name`` — an unknown
  name is ``null``; member access ``a.b`` and ``a[0]``;
- operators, JEXL precedence: ``?:``, ``||``, ``&&``, ``==`` ``!=``, ``<`` ``<=`` ``>`` ``>=``
  ``in``, ``+`` ``-`` (``+`` concatenates when either side is text), ``*`` ``/`` ``//`` ``%``, ``^``
  (power), unary ``!`` and ``-``;
- transforms ``value|name(args)``: see :data:`TRANSFORMS`.

Not supported: JEXL's object literals, filters ``a[.x > 1]``, user-registered functions, and
the IoT Agents' transforms that read the clock (``now``) or need a time-zone database.

A missing name in arithmetic gives ``null`` (JavaScript's ``undefined * 2`` is ``NaN``).

Limits: 1,024 characters, 64 levels of nesting, text results of 65,536 characters; numbers are
doubles (as in JavaScript), so a power never builds a huge integer. Evaluation never raises:
a type error (``"a" - 1``), a division by zero or a non-finite result gives ``null``, and an
attribute whose expression gives ``null`` is left out of the entity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_LENGTH: Final = 1024
MAX_DEPTH: Final = 64
MAX_TEXT: Final = 65536


class ExpressionError(ValueError):
    """An expression that does not parse; ``position`` is the character offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.position = position


class _Undefined(Exception):
    """Evaluation gave no value (type error, division by zero, non-finite): the result is null."""


# --------------------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> float | int:
    if _is_number(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = float(value.strip()) if value.strip() else 0.0
        except ValueError:
            raise _Undefined from None
        return _finite(parsed)
    raise _Undefined


def _finite(value: float | int) -> float | int:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Undefined
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    elif abs(value) > 2**53:
        return _finite(float(value))
    return value


def text(value: Any) -> str:
    """A value as JavaScript's ``String(value)`` writes it (``21.0`` → ``"21"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value) if not isinstance(value, list | dict) else True


def _text_result(value: str) -> str:
    if len(value) > MAX_TEXT:
        raise _Undefined
    return value


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        return _text_result(text(a) + text(b))
    return _finite(_number(a) + _number(b))


def _div(a: Any, b: Any) -> Any:
    divisor = _number(b)
    if divisor == 0:
        raise _Undefined
    return _finite(_number(a) / divisor)


def _floordiv(a: Any, b: Any) -> Any:
    divisor = _number(b)
    if divisor == 0:
        raise _Undefined
    return _finite(math.floor(_number(a) / divisor))


def _mod(a: Any, b: Any) -> Any:
    divisor = _number(b)
    if divisor == 0:
        raise _Undefined
    return _finite(math.fmod(_number(a), divisor))


def _pow(a: Any, b: Any) -> Any:
    try:
        return _finite(math.pow(float(_number(a)), float(_number(b))))
    except (OverflowError, ValueError):
        raise _Undefined from None


def _compare(op: str) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        x: Any
        y: Any
        if isinstance(a, str) and isinstance(b, str):
            x, y = a, b
        else:
            x, y = _number(a), _number(b)
        if op == "<":
            return bool(x < y)
        if op == "<=":
            return bool(x <= y)
        if op == ">":
            return bool(x > y)
        return bool(x >= y)
    return compare


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _in(a: Any, b: Any) -> bool:
    if isinstance(b, str):
        return isinstance(a, str) and a in b
    if isinstance(b, list):
        return any(_equal(a, item) for item in b)
    if isinstance(b, dict):
        return isinstance(a, str) and a in b
    raise _Undefined


_BINARY: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "+": _add,
    "-": lambda a, b: _finite(_number(a) - _number(b)),
    "*": lambda a, b: _finite(_number(a) * _number(b)),
    "/": _div,
    "//": _floordiv,
    "%": _mod,
    "^": _pow,
    "<": _compare("<"),
    "<=": _compare("<="),
    ">": _compare(">"),
    ">=": _compare(">="),
    "==": _equal,
    "!=": lambda a, b: not _equal(a, b),
    "in": _in,
}

# --------------------------------------------------------------------------- transforms


def _arg(args: Sequence[Any], index: int, default: Any = None) -> Any:
    return args[index] if len(args) > index else default


def _substr(value: Any, args: Sequence[Any]) -> str:
    s = text(value)
    start = int(_number(_arg(args, 0, 0)))
    end = _arg(args, 1)
    return s[start:] if end is None else s[start:int(_number(end))]


def _round(value: Any, args: Sequence[Any]) -> Any:
    digits = int(_number(_arg(args, 0, 0)))
    if not 0 <= digits <= 15:
        raise _Undefined
    number = _number(value)
    # JavaScript's rounding (half up), not Python's banker's rounding.
    factor = 10**digits
    return _finite(math.floor(number * factor + 0.5) / factor)


def _parse_int(value: Any, args: Sequence[Any]) -> Any:
    base = int(_number(_arg(args, 0, 10)))
    try:
        return int(text(value).strip(), base)
    except ValueError:
        raise _Undefined from None


def _json_parse(value: Any, args: Sequence[Any]) -> Any:  # noqa: ARG001  # transform signature
    if not isinstance(value, str):
        raise _Undefined
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise _Undefined from None
    return parsed


def _length(value: Any, args: Sequence[Any]) -> int:  # noqa: ARG001  # transform signature
    if isinstance(value, str | list | dict):
        return len(value)
    raise _Undefined


def _index_of(value: Any, args: Sequence[Any]) -> int:
    needle = _arg(args, 0)
    if isinstance(value, str):
        return value.find(text(needle))
    if isinstance(value, list):
        return next((i for i, item in enumerate(value) if _equal(item, needle)), -1)
    raise _Undefined


def _split(value: Any, args: Sequence[Any]) -> list[str]:
    separator = text(_arg(args, 0, ","))
    if not separator:
        return list(text(value))[:MAX_TEXT]
    return text(value).split(separator)


def _typeof(value: Any, args: Sequence[Any]) -> str:  # noqa: ARG001  # transform signature
    if value is None:
        return "object"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _add_reduce(value: Any, args: Sequence[Any]) -> Any:  # noqa: ARG001  # transform signature
    if not isinstance(value, list):
        raise _Undefined
    total: float | int = 0
    for item in value:
        total = _finite(total + _number(item))
    return total


def _hex_to_text(value: Any, args: Sequence[Any]) -> str:  # noqa: ARG001  # transform signature
    try:
        return bytes.fromhex(text(value)).decode("utf-8")
    except ValueError:
        raise _Undefined from None


Transform = Callable[[Any, Sequence[Any]], Any]

TRANSFORMS: Final[Mapping[str, Transform]] = {
    # text
    "toUpperCase": lambda v, a: text(v).upper(),
    "toLowerCase": lambda v, a: text(v).lower(),
    "trim": lambda v, a: text(v).strip(),
    "substr": _substr,
    "indexOf": _index_of,
    "length": _length,
    "split": _split,
    "replacestr": lambda v, a: _text_result(text(v).replace(text(_arg(a, 0, "")), text(_arg(a, 1, "")))),
    "tostring": lambda v, a: text(v),
    "hextostring": _hex_to_text,
    # numbers
    "parseint": _parse_int,
    "parsefloat": lambda v, a: _number(text(v)),
    "round": _round,
    "floor": lambda v, a: _finite(math.floor(_number(v))),
    "ceil": lambda v, a: _finite(math.ceil(_number(v))),
    "abs": lambda v, a: _finite(abs(_number(v))),
    "addreduce": _add_reduce,
    # structure
    "jsonparse": _json_parse,
    "jsonstringify": lambda v, a: _text_result(text(v) if not isinstance(v, str) else json.dumps(v)),
    "typeof": _typeof,
    "isarray": lambda v, a: isinstance(v, list),
    "isnan": lambda v, a: not _is_number(v),
    "lengtharray": _length,
}
"""The transforms (``value|name(args)``): names as the IoT Agents' JEXL transforms map spells them."""

# --------------------------------------------------------------------------- tree


@dataclass(frozen=True, slots=True)
class _Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class _Name:
    name: str


@dataclass(frozen=True, slots=True)
class _Member:
    target: Any
    key: Any  # a node


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str
    operand: Any


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class _Logical:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class _Conditional:
    test: Any
    then: Any
    otherwise: Any


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Transform:
    name: str
    target: Any
    args: tuple[Any, ...]


# --------------------------------------------------------------------------- lexer and parser

_OPERATORS: Final = ("//", "==", "!=", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%", "^", "<", ">", "!",
                     "?", ":", "(", ")", "[", "]", ",", ".", "|")
_KEYWORDS: Final[Mapping[str, Any]] = {"true": True, "false": False, "null": None}
_ESCAPES: Final[Mapping[str, str]] = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _tokens(source: str) -> list[tuple[str, Any, int]]:
    """(kind, value, position) triples; kind is num, str, name or op."""
    out: list[tuple[str, Any, int]] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and source[i + 1].isdigit()):
            j = i
            while j < n and (source[j].isdigit() or source[j] == "."):
                j += 1
            if j < n and source[j] in "eE":
                k = j + 1
                if k < n and source[k] in "+-":
                    k += 1
                if k < n and source[k].isdigit():
                    j = k
                    while j < n and source[j].isdigit():
                        j += 1
            try:
                number = float(source[i:j])
            except ValueError:
                raise ExpressionError(f"bad number {source[i:j]!r}", i) from None
            if not math.isfinite(number):
                raise ExpressionError("number out of range", i)
            out.append(("num", _finite(number), i))
            i = j
            continue
        if c in "'\"":
            j, chars = i + 1, []
            while j < n and source[j] != c:
                if source[j] == "\\" and j + 1 < n:
                    chars.append(_ESCAPES.get(source[j + 1], source[j + 1]))
                    j += 2
                else:
                    chars.append(source[j])
                    j += 1
            if j >= n:
                raise ExpressionError("unterminated string", i)
            out.append(("str", "".join(chars), i))
            i = j + 1
            continue
        if c.isalpha() or c in "_$@":
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] in "_$@"):
                j += 1
            out.append(("name", source[i:j], i))
            i = j
            continue
        for op in _OPERATORS:
            if source.startswith(op, i):
                out.append(("op", op, i))
                i += len(op)
                break
        else:
            raise ExpressionError(f"unexpected character {c!r}", i)
    return out


_PRECEDENCE: Final[Mapping[str, int]] = {
    "||": 10, "&&": 20, "==": 30, "!=": 30, "<": 40, "<=": 40, ">": 40, ">=": 40, "in": 40,
    "+": 50, "-": 50, "*": 60, "/": 60, "//": 60, "%": 60, "^": 70,
}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokens(source)
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        return token is not None and token[0] == kind and (value is None or token[1] == value)

    def take(self, kind: str, value: Any = None) -> tuple[str, Any, int]:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            where = token[2] if token is not None else len(self.source)
            wanted = repr(value) if value is not None else kind
            raise ExpressionError(f"expected {wanted}", where)
        self.pos += 1
        return token

    def parse(self) -> Any:
        node = self.expression()
        token = self.peek()
        if token is not None:
            raise ExpressionError(f"unexpected {token[1]!r}", token[2])
        return node

    def expression(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            token = self.peek()
            raise ExpressionError("expression nested too deeply", token[2] if token else len(self.source))
        try:
            test = self.binary(0)
            if self.at("op", "?"):
                self.take("op", "?")
                then = self.expression()
                self.take("op", ":")
                return _Conditional(test, then, self.expression())
            return test
        finally:
            self.depth -= 1

    def _binary_op(self) -> str | None:
        token = self.peek()
        if token is None:
            return None
        if token[0] == "op" and token[1] in _PRECEDENCE:
            return str(token[1])
        if token[0] == "name" and token[1] == "in":
            return "in"
        return None

    def binary(self, minimum: int) -> Any:
        left = self.unary()
        while True:
            op = self._binary_op()
            if op is None or _PRECEDENCE[op] < minimum:
                return left
            self.pos += 1
            # "^" is right-associative; the others associate to the left.
            right = self.binary(_PRECEDENCE[op] + (0 if op == "^" else 1))
            left = _Logical(op, left, right) if op in ("&&", "||") else _Binary(op, left, right)

    def unary(self) -> Any:
        if self.at("op", "!") or self.at("op", "-"):
            op = self.take("op")[1]
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError("expression nested too deeply", self.tokens[self.pos - 1][2])
            try:
                return _Unary(op, self.unary())
            finally:
                self.depth -= 1
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        while True:
            if self.at("op", "."):
                self.take("op", ".")
                node = _Member(node, _Literal(self.take("name")[1]))
            elif self.at("op", "["):
                self.take("op", "[")
                key = self.expression()
                self.take("op", "]")
                node = _Member(node, key)
            elif self.at("op", "|"):
                self.take("op", "|")
                name_token = self.take("name")
                if name_token[1] not in TRANSFORMS:
                    raise ExpressionError(f"unknown transform {name_token[1]!r}", name_token[2])
                args: list[Any] = []
                if self.at("op", "("):
                    self.take("op", "(")
                    if not self.at("op", ")"):
                        args.append(self.expression())
                        while self.at("op", ","):
                            self.take("op", ",")
                            args.append(self.expression())
                    self.take("op", ")")
                node = _Transform(name_token[1], node, tuple(args))
            else:
                return node

    def primary(self) -> Any:
        token = self.peek()
        if token is None:
            raise ExpressionError("unexpected end of expression", len(self.source))
        kind, value, where = token
        if kind in ("num", "str"):
            self.pos += 1
            return _Literal(value)
        if kind == "name":
            self.pos += 1
            if value in _KEYWORDS:
                return _Literal(_KEYWORDS[value])
            return _Name(value.lstrip("@"))
        if kind == "op" and value == "(":
            self.take("op", "(")
            node = self.expression()
            self.take("op", ")")
            return node
        if kind == "op" and value == "[":
            self.take("op", "[")
            items: list[Any] = []
            if not self.at("op", "]"):
                items.append(self.expression())
                while self.at("op", ","):
                    self.take("op", ",")
                    items.append(self.expression())
            self.take("op", "]")
            return _Array(tuple(items))
        raise ExpressionError(f"unexpected {value!r}", where)


# --------------------------------------------------------------------------- evaluation


def _evaluate(node: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Name):
        return context.get(node.name)
    if isinstance(node, _Binary):
        return _BINARY[node.op](_evaluate(node.left, context), _evaluate(node.right, context))
    if isinstance(node, _Logical):
        left = _evaluate(node.left, context)
        if node.op == "&&":
            return _evaluate(node.right, context) if _truthy(left) else left
        return left if _truthy(left) else _evaluate(node.right, context)
    if isinstance(node, _Conditional):
        branch = node.then if _truthy(_evaluate(node.test, context)) else node.otherwise
        return _evaluate(branch, context)
    if isinstance(node, _Unary):
        operand = _evaluate(node.operand, context)
        return (not _truthy(operand)) if node.op == "!" else _finite(-_number(operand))
    if isinstance(node, _Member):
        target, key = _evaluate(node.target, context), _evaluate(node.key, context)
        if isinstance(target, dict) and isinstance(key, str):
            return target.get(key)
        if isinstance(target, list | str) and _is_number(key) and float(key).is_integer():
            index = int(key)
            return target[index] if 0 <= index < len(target) else None
        if isinstance(target, list | str) and key == "length":
            return len(target)
        return None
    if isinstance(node, _Array):
        return [_evaluate(item, context) for item in node.items]
    if isinstance(node, _Transform):
        value = _evaluate(node.target, context)
        args = [_evaluate(arg, context) for arg in node.args]
        return TRANSFORMS[node.name](value, args)
    raise _Undefined  # unreachable: the parser builds only the nodes above


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression; :meth:`evaluate` gives its value for one measure, or None."""

    source: str
    tree: Any

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The value for ``context`` (names → values); None when it has none (see the module docstring)."""
        try:
            value = _evaluate(self.tree, context)
        except (_Undefined, TypeError, ValueError, OverflowError, RecursionError, IndexError):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value


def compile_expression(source: str) -> Expression:
    """Parse ``source``; ExpressionError names the problem and its position."""
    if not isinstance(source, str):
        raise ExpressionError("an expression must be text", 0)
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    text_source = source.strip()
    # The IoT Agents' legacy syntax wraps the expression in ${...}.
    if text_source.startswith("${") and text_source.endswith("}"):
        text_source = text_source[2:-1]
    if not text_source:
        raise ExpressionError("empty expression", 0)
    return Expression(source, _Parser(text_source).parse())
