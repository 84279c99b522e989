"""The LLM judge of the open questions through an OpenAI-compatible chat endpoint (urllib, no SDK).

Prompt, system message and sampling follow the official challenge/gpt_eval.py: the reply is a
0..100 rating of the answer against the GT answer.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SYSTEM_MESSAGE = "an evaluator who rates my answer based on the correct answer"
INSTRUCTION = (
    "Rate my answer based on the correct answer out of 100, with higher scores indicating that the answer is closer "
    "to the correct answer, and you should be accurate to single digits like 62, 78, 41,etc. Output the number only"
)
TEMPERATURE = 0.6
MAX_TOKENS = 3000
THINK_BLOCK = re.compile(r"<think>[\s\S]*?</think>\s*")
RATING = re.compile(r"\d+(?:\.\d+)?")


class JudgeError(RuntimeError):
    """The judge endpoint cannot be used (unreachable, HTTP error, unexpected response)."""


def judge_prompt(answer: str, gt_answer: str) -> str:
    # Concatenated without separators, exactly as the official script does.
    return INSTRUCTION + "This is the correct answer: " + gt_answer + "This is my answer: " + answer


def parse_rating(reply: str) -> float | None:
    """The first number of the reply, clamped to 0..100; None when there is none."""
    found = RATING.search(THINK_BLOCK.sub("", reply))
    return None if found is None else min(max(float(found.group(0)), 0.0), 100.0)


@dataclass(frozen=True)
class Judge:
    url: str  # base URL such as http://host:8000/v1, or the full .../chat/completions URL
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    workers: int = 8

    @property
    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def reply(self, answer: str, gt_answer: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_MESSAGE},
                         {"role": "user", "content": judge_prompt(answer, gt_answer)}],
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as error:
            raise JudgeError(f"judge {self.endpoint}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise JudgeError(f"judge {self.endpoint}: unreachable ({reason})") from None
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge {self.endpoint}: expected an OpenAI chat completion response") from None

    def rate_all(self, pairs: list[tuple[str, str]]) -> list[float | None]:
        """Ratings of (answer, GT answer) pairs, in order; None where the reply held no number.

        Raises JudgeError on the first call that fails, so an unreachable judge fails fast.
        """
        pool = ThreadPoolExecutor(max_workers=self.workers)
        try:
            return [parse_rating(reply) for reply in pool.map(lambda pair: self.reply(*pair), pairs)]
        finally:
            pool.shutdown(cancel_futures=True)
