"""A safe parser for math answers (LaTeX or plain): text -> sympy expression, built by explicit constructors.

Model text is hostile. Nothing here calls ``eval``, ``exec``, ``sympify`` or ``parse_expr``: a tokenizer and
a recursive-descent parser build ``sympy.Integer``, ``Rational``, ``Symbol``, ``Add``, ``Mul``, ``Pow`` and a
whitelist of functions. Sizes are guarded with the limits of ``rewards.limits`` (length, nesting, digits,
exponents, factorials), and powers are built unevaluated so ``2^{10^{10}}`` costs nothing until a bounded
numeric check looks at it.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

import sympy as sp

from rewards.limits import MAX_ANSWER, MAX_DIGITS, MAX_EXPONENT, MAX_FACTORIAL, MAX_PARSE_DEPTH


class ParseError(ValueError):
    pass


GREEK = {"alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma", "tau", "rho", "psi"}
FUNCS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "ln": sp.log, "log": sp.log, "exp": sp.exp,
}  # fmt: skip
CONSTS = {"pi": sp.pi, "infty": sp.oo, "infinity": sp.oo, "inf": sp.oo, "e": sp.E}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)|(?P<cmd>\\[a-zA-Z]+|\\[{}|%])|(?P<name>[a-zA-Z]+)"
    r"|(?P<op>\*\*|[-+*/^()\[\]{}!,=|_']|\u00b7|\u00d7|\u2212))"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_ANSWER:
        raise ParseError("answer too long")
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ParseError(f"unexpected character {text[pos]!r}")
        pos = m.end()
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "op":
            val = {"**": "^", "\u00b7": "*", "\u00d7": "*", "\u2212": "-"}.get(val, val)
        if kind == "cmd":
            val = {"\\cdot": "*", "\\times": "*", "\\div": "/", "\\{": "{", "\\}": "}", "\\lbrace": "{",
                   "\\rbrace": "}", "\\%": "%"}.get(val, val)  # fmt: skip
            if val in {"*", "/", "{", "}"}:
                kind = "op"
        if kind == "name" and len(val) > 1 and val not in FUNCS and val not in CONSTS and val not in GREEK:
            out.extend(("name", ch) for ch in val)  # 'xy' is x*y; words are not answers here
            continue
        out.append((kind, val))
    return out


class Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/'|implicit) factor)* ;
    factor := ('-'|'+') factor | power ; power := postfix ('^' factor)? ; postfix := atom ('!')*"""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks, self.i, self.depth = tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ParseError(f"expected {value!r}, got {tok}")
        self.i += 1
        return tok

    def parse(self) -> sp.Expr:
        e = self.expr()
        if self.peek() is not None:
            raise ParseError(f"trailing input at {self.peek()}")
        return e

    def expr(self) -> sp.Expr:
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            raise ParseError("nesting too deep")
        left = self.term()
        while (tok := self.peek()) and tok[1] in "+-" and tok[0] == "op":
            self.take()
            right = self.term()
            left = sp.Add(left, right if tok[1] == "+" else sp.Mul(-1, right, evaluate=False), evaluate=False)
        self.depth -= 1
        return left

    def term(self) -> sp.Expr:
        left = self.factor()
        while (tok := self.peek()) is not None:
            if tok == ("op", "*"):
                self.take()
                left = sp.Mul(left, self.factor(), evaluate=False)
            elif tok == ("op", "/"):
                self.take()
                left = sp.Mul(left, sp.Pow(self.factor(), -1, evaluate=False), evaluate=False)
            elif self.starts_atom(tok):  # implicit multiplication: 2x, 3\pi, 2(x+1)
                left = sp.Mul(left, self.power(), evaluate=False)
            else:
                break
        return left

    @staticmethod
    def starts_atom(tok: tuple[str, str]) -> bool:
        kind, val = tok
        if kind in ("num", "name"):
            return True
        if kind == "op":
            return val in "({"
        return val in ("\\frac", "\\sqrt", "\\pi", "\\infty") or val[1:] in FUNCS or val[1:] in GREEK

    def factor(self) -> sp.Expr:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] in "+-":
            self.take()
            inner = self.factor()
            return sp.Mul(-1, inner, evaluate=False) if tok[1] == "-" else inner
        return self.power()

    def power(self) -> sp.Expr:
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.take()
            exp = self.group_or_factor()
            if exp.is_Integer and abs(int(exp)) > MAX_EXPONENT:
                raise ParseError("exponent too large")
            return sp.Pow(base, exp, evaluate=False)
        return base

    def postfix(self) -> sp.Expr:
        e = self.atom()
        while self.peek() == ("op", "!"):
            self.take()
            if not (e.is_Integer and 0 <= int(e) <= MAX_FACTORIAL):
                raise ParseError("factorial of a non-integer or too large number")
            e = sp.factorial(e)
        while self.peek() in (("op", "%"), ("cmd", "%")):
            self.take()
            e = sp.Mul(e, sp.Rational(1, 100), evaluate=False)
        return e

    def group_or_factor(self) -> sp.Expr:
        if self.peek() == ("op", "{"):
            return self.braced()
        tok = self.peek()
        if tok and tok[0] == "num" and "." not in tok[1] and len(tok[1]) > 1:  # x^23 in LaTeX is x^2 * 3
            self.take()
            self.toks.insert(self.i, ("num", tok[1][1:]))
            return sp.Integer(int(tok[1][0]))
        return self.factor()

    def braced(self) -> sp.Expr:
        self.take("{")
        e = self.expr()
        self.take("}")
        return e

    def atom(self) -> sp.Expr:
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end")
        kind, val = tok
        self.take()
        if kind == "num":
            digits = val.replace(".", "")
            if len(digits) > MAX_DIGITS:
                raise ParseError("number too long")
            _, _, exponent = val.lower().partition("e")
            if exponent and abs(int(exponent)) > MAX_DIGITS:
                raise ParseError("number too large")
            q = Fraction(val)  # exact decimal / scientific literal; digits only, checked by the tokenizer
            return sp.Rational(q.numerator, q.denominator)
        if kind == "name":
            if val in CONSTS:
                return CONSTS[val]
            if val in FUNCS:
                return self.function(FUNCS[val])
            return sp.Symbol(val)
        if kind == "op" and val in "([{":
            close = {"(": ")", "[": "]", "{": "}"}[val]
            e = self.expr()
            self.take(close)
            return e
        if kind == "op" and val == "|":
            e = self.expr()
            self.take("|")
            return sp.Abs(e)
        if kind == "cmd":
            name = val[1:]
            if name == "frac":
                num = self.frac_arg()
                den = self.frac_arg()
                return sp.Mul(num, sp.Pow(den, -1, evaluate=False), evaluate=False)
            if name == "sqrt":
                index = 2
                if self.peek() == ("op", "["):
                    self.take("[")
                    index = self.expr()
                    self.take("]")
                return sp.Pow(self.frac_arg(), sp.Pow(index, -1), evaluate=False)
            if name in CONSTS:
                return CONSTS[name]
            if name in GREEK:
                return sp.Symbol(name)
            if name in FUNCS:
                return self.function(FUNCS[name])
        raise ParseError(f"unsupported token {val!r}")

    def frac_arg(self) -> sp.Expr:
        """A \\frac / \\sqrt argument: {expr}, or a single digit / letter (\\frac12)."""
        if self.peek() == ("op", "{"):
            return self.braced()
        kind, val = self.take()
        if kind == "num" and val[0].isdigit():
            if len(val) > 1:  # \frac12: the first digit is this argument, the rest comes next
                self.toks.insert(self.i, ("num", val[1:]))
            return sp.Integer(int(val[0]))
        if kind == "name":
            return sp.Symbol(val)
        raise ParseError("bad \\frac argument")

    def function(self, fn) -> sp.Expr:
        power = None
        if self.peek() == ("op", "^"):  # \sin^2 x
            self.take()
            power = self.group_or_factor()
        if self.peek() == ("op", "_"):  # \log_2 x
            self.take()
            base = self.group_or_factor()
            arg = self.power() if self.peek() != ("op", "(") else self.atom()
            out = sp.Mul(sp.log(arg), sp.Pow(sp.log(base), -1), evaluate=False)
        else:
            arg = self.atom() if self.peek() in (("op", "("), ("op", "{")) else self.power()
            out = fn(arg, evaluate=False) if fn is not sp.exp else sp.Pow(sp.E, arg, evaluate=False)
        return sp.Pow(out, power, evaluate=False) if power is not None else out


@functools.lru_cache(maxsize=4096)  # gold answers repeat G times per step: parse them once per worker
def parse_math(text: str) -> sp.Expr:
    """Parse one scalar expression; raises ParseError on anything it does not understand."""
    return Parser(tokenize(text)).parse()
