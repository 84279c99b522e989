"""Python stand-in for the Stanford PTB tokenizer that the COCO caption scorers expect (no Java).

Reproduces `PTBTokenizer -preserveLines -lowerCase` followed by the COCO punctuation filter:
lower-case, split punctuation and clitics, keep number shapes such as `,812.4,466.0` whole,
then drop the COCO punctuation tokens.
"""

from __future__ import annotations

import re

# Tokens the COCO wrapper drops after PTB tokenization; PTB writes ( ) { } " as -LRB- -RRB- -LCB- -RCB- `` ''.
COCO_PUNCTUATION = frozenset(["''", "'", "``", "`", "(", ")", "{", "}", '"', ".", "?", "!", ",", ":", "-", "--",
                              "...", ";"])
# PTB escapes square brackets to -LSB-/-RSB-, which the COCO list does not drop.
BRACKET_ESCAPES = {"[": "-lsb-", "]": "-rsb-"}

TOKEN = re.compile(
    r"""\d*(?:[.,:]\d+)+          # number shapes: 812.4  1,000  12:30  ,812.4,466.0 (a leading comma joins)
      | (?:[a-z]\.){2,}           # abbreviations with inner periods: e.g.  u.s.
      | \w+?(?=n't\b)             # "do" of "don't"
      | n't\b | '(?:s|re|ve|ll|d|m)\b   # clitics split off as PTB does
      | \w+(?:-\w+)*              # words, hyphenated words
      | \.\.\. | --+              # ellipsis, dashes
      | [<>]                      # tag brackets around `<c1,CAM_FRONT,x,y>`: separators (METHOD.md)
      | \S                        # any other symbol is its own token
    """,
    re.VERBOSE,
)
SEPARATORS = frozenset("<>")


def ptb_tokenize(text: str) -> str:
    """One caption -> space-joined lower-case tokens, COCO punctuation removed."""
    tokens = []
    for token in TOKEN.findall(text.replace("\n", " ").lower()):
        if token in SEPARATORS or token in COCO_PUNCTUATION or re.fullmatch(r"--+", token):
            continue
        tokens.append(BRACKET_ESCAPES.get(token, token))
    return " ".join(tokens)
