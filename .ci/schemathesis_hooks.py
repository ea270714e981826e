"""Hooks of the contract fuzzing (.ci/fuzz): loaded through SCHEMATHESIS_HOOKS.

XML 1.0 cannot carry some characters: NUL and the other C0 controls but tab, line feed and
carriage return, U+FFFE, U+FFFF and lone surrogates. schemathesis's XML serializer drops them
without a word, so a body it generated to break a pattern with one of them reaches the service
as another body, one the pattern allows, and the service's 201 is then reported as "invalid data
accepted" (schemathesis 4.32 checks what a form body became once sent, not what an XML one did).
Such a case cannot be sent as XML at all, so it is left out, for XML bodies only; JSON bodies
keep every character.

Nor can XML carry a value's type: every element holds text. A body generated to break a field's
type (`null`, a number or a boolean where the schema says string) reaches the service as the
text `null`, `0` or `true`, which the field's rule may allow, and the 201 is again reported as
"invalid data accepted". Every field of the XML schemas is a string, so a non-string value in an
element is such a case, and is left out too; bodies of the wrong shape (an element holding
elements, a scalar for the whole body) are kept, and refused.
"""

import re

import schemathesis

NOT_IN_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _typed_elements(value):
    """The values of elements (inside the body's objects) that are neither text nor elements."""
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, (dict, list)):
                yield from _typed_elements(item)
            elif not isinstance(item, str):
                yield item
    elif isinstance(value, list):
        for item in value:
            yield from _typed_elements(item)


@schemathesis.hook
def filter_case(ctx, case):
    if "xml" not in (case.media_type or "").lower():
        return True
    if any(NOT_IN_XML.search(text) for text in _strings(case.body)):
        return False
    return not any(True for _ in _typed_elements(case.body))
