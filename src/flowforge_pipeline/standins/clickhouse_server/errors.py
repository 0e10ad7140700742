"""ClickHouse exceptions as a client sees them: code, name, one-line body and HTTP status.

Clients branch on these (clickhouse-connect raises by `X-ClickHouse-Exception-Code`, dbt
reports the body), so the code numbers and the status mapping follow ClickHouse's own
`exceptionCodeToHTTPStatus`.
"""

from __future__ import annotations

import re
from http import HTTPStatus

# Code numbers as the engine itself reports them (`errorCodeToName`).
CODES: dict[str, int] = {
    "CANNOT_PARSE_TEXT": 6,
    "THERE_IS_NO_COLUMN": 8,
    "DUPLICATE_COLUMN": 15,
    "CANNOT_PARSE_ESCAPE_SEQUENCE": 25,
    "CANNOT_PARSE_QUOTED_STRING": 26,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27,
    "CANNOT_READ_ALL_DATA": 33,
    "BAD_ARGUMENTS": 36,
    "UNKNOWN_ELEMENT_IN_AST": 37,
    "CANNOT_PARSE_DATE": 38,
    "CANNOT_PARSE_DATETIME": 41,
    "ILLEGAL_COLUMN": 44,
    "UNKNOWN_FUNCTION": 46,
    "UNKNOWN_IDENTIFIER": 47,
    "NOT_IMPLEMENTED": 48,
    "UNKNOWN_TYPE": 50,
    "TYPE_MISMATCH": 53,
    "UNKNOWN_STORAGE": 56,
    "UNKNOWN_TABLE": 60,
    "SYNTAX_ERROR": 62,
    "UNKNOWN_AGGREGATE_FUNCTION": 63,
    "CANNOT_PARSE_NUMBER": 72,
    "UNKNOWN_FORMAT": 73,
    "CANNOT_OPEN_FILE": 76,
    "UNKNOWN_TYPE_OF_QUERY": 78,
    "UNKNOWN_DATABASE": 81,
    "UNKNOWN_COMPRESSION_METHOD": 89,
    "UNKNOWN_SETTING": 115,
    "INCORRECT_DATA": 117,
    "UNKNOWN_TYPE_OF_AST_NODE": 123,
    "UNKNOWN_DIRECTION_OF_SORTING": 152,
    "TIMEOUT_EXCEEDED": 159,
    "READONLY": 164,
    "TOO_DEEP_AST": 167,
    "TOO_BIG_AST": 168,
    "UNKNOWN_USER": 192,
    "WRONG_PASSWORD": 193,
    "REQUIRED_PASSWORD": 194,
    "SOCKET_TIMEOUT": 209,
    "UNEXPECTED_AST_STRUCTURE": 223,
    "QUERY_IS_TOO_LARGE": 229,
    "CANNOT_DECOMPRESS": 271,
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": 321,
    "UNKNOWN_DATABASE_ENGINE": 336,
    "SESSION_NOT_FOUND": 372,
    "SESSION_IS_LOCKED": 373,
    "INVALID_SESSION_TIMEOUT": 374,
    "CANNOT_PARSE_UUID": 376,
    "HTTP_LENGTH_REQUIRED": 381,
    "CANNOT_COMPILE_REGEXP": 427,
    "CANNOT_SCHEDULE_TASK": 439,
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING": 441,
    "ACCESS_DENIED": 497,
    "UNKNOWN_ROLE": 511,
    "SET_NON_GRANTED_ROLE": 512,
    "AUTHENTICATION_FAILED": 516,
    "CANNOT_PARSE_IPV4": 675,
    "CANNOT_PARSE_IPV6": 676,
    "UNSUPPORTED_MEDIA_TYPE": 779,
    "UNKNOWN_EXCEPTION": 1002,
}

_FORBIDDEN = {
    "UNKNOWN_USER",
    "WRONG_PASSWORD",
    "AUTHENTICATION_FAILED",
    "SET_NON_GRANTED_ROLE",
    "ACCESS_DENIED",
}
_BAD_REQUEST = {
    "BAD_ARGUMENTS",
    "CANNOT_COMPILE_REGEXP",
    "CANNOT_PARSE_TEXT",
    "CANNOT_PARSE_ESCAPE_SEQUENCE",
    "CANNOT_PARSE_QUOTED_STRING",
    "CANNOT_PARSE_DATE",
    "CANNOT_PARSE_DATETIME",
    "CANNOT_PARSE_NUMBER",
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
    "CANNOT_PARSE_IPV4",
    "CANNOT_PARSE_IPV6",
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    "CANNOT_PARSE_UUID",
    "DUPLICATE_COLUMN",
    "ILLEGAL_COLUMN",
    "UNKNOWN_ELEMENT_IN_AST",
    "UNKNOWN_TYPE_OF_AST_NODE",
    "THERE_IS_NO_COLUMN",
    "TOO_DEEP_AST",
    "TOO_BIG_AST",
    "UNEXPECTED_AST_STRUCTURE",
    "SYNTAX_ERROR",
    "INCORRECT_DATA",
    "TYPE_MISMATCH",
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
}
_NOT_FOUND = {
    "UNKNOWN_TABLE",
    "UNKNOWN_FUNCTION",
    "UNKNOWN_IDENTIFIER",
    "UNKNOWN_TYPE",
    "UNKNOWN_STORAGE",
    "UNKNOWN_DATABASE",
    "UNKNOWN_SETTING",
    "UNKNOWN_DIRECTION_OF_SORTING",
    "UNKNOWN_AGGREGATE_FUNCTION",
    "UNKNOWN_FORMAT",
    "UNKNOWN_DATABASE_ENGINE",
    "UNKNOWN_TYPE_OF_QUERY",
    "UNKNOWN_ROLE",
}
_OTHER = {
    "REQUIRED_PASSWORD": HTTPStatus.UNAUTHORIZED,
    "QUERY_IS_TOO_LARGE": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    "NOT_IMPLEMENTED": HTTPStatus.NOT_IMPLEMENTED,
    "SOCKET_TIMEOUT": HTTPStatus.SERVICE_UNAVAILABLE,
    "CANNOT_OPEN_FILE": HTTPStatus.SERVICE_UNAVAILABLE,
    "HTTP_LENGTH_REQUIRED": HTTPStatus.LENGTH_REQUIRED,
    "TIMEOUT_EXCEEDED": HTTPStatus.REQUEST_TIMEOUT,
    "CANNOT_SCHEDULE_TASK": HTTPStatus.SERVICE_UNAVAILABLE,
    "UNSUPPORTED_MEDIA_TYPE": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
}

_ENGINE_ERROR = re.compile(
    r"Code: (\d+)\. (.*?)(?: \(([A-Z0-9_]+)\))?(?: \(version [^)]*\))?\s*$", re.DOTALL
)


class ClickHouseError(Exception):
    """An error to send to the client in ClickHouse's shape."""

    def __init__(self, name: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.code = code if code is not None else CODES.get(name, CODES["UNKNOWN_EXCEPTION"])
        self.message = message

    @property
    def status(self) -> HTTPStatus:
        """The HTTP status ClickHouse answers this error with."""
        if self.name in _FORBIDDEN:
            return HTTPStatus.FORBIDDEN
        if self.name in _BAD_REQUEST:
            return HTTPStatus.BAD_REQUEST
        if self.name in _NOT_FOUND:
            return HTTPStatus.NOT_FOUND
        return _OTHER.get(self.name, HTTPStatus.INTERNAL_SERVER_ERROR)

    def body(self) -> str:
        """The response body: `Code: N. DB::Exception: ... (NAME)` and a newline."""
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})\n"


class EngineError(ClickHouseError):
    """An error raised by the engine itself; its text is passed through unchanged."""

    def __init__(self, name: str, code: int, text: str) -> None:
        super().__init__(name, text, code)
        self.text = text

    def body(self) -> str:
        """The engine's own `Code: N. DB::Exception: ...` text."""
        return self.text.rstrip("\n") + "\n"


def from_engine(exc: BaseException) -> ClickHouseError:
    """Turn an exception raised by chdb into the ClickHouse error it carries.

    chdb wraps some messages (`Streaming insert finish failed: Code: 27. ...`); the prefix
    is a Python-side detail a ClickHouse client would never see, so it is cut.
    """
    text = str(exc)
    start = text.find("Code: ")
    if start == -1:
        return ClickHouseError("UNKNOWN_EXCEPTION", text.strip() or type(exc).__name__)
    text = text[start:].strip()
    match = _ENGINE_ERROR.match(text)
    if not match:
        return ClickHouseError("UNKNOWN_EXCEPTION", text)
    code = int(match.group(1))
    name = match.group(3) or next((n for n, c in CODES.items() if c == code), "UNKNOWN_EXCEPTION")
    return EngineError(name, code, text)
