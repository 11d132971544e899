"""Candidate words from any LLM that litellm can reach.

litellm is imported lazily (seconds of import time) and always called with an explicit timeout.
Retries are ours, not litellm's (its retry path needs tenacity and retries everything): only
failures worth retrying (refused or dropped connections, HTTP 5xx, rate limits) are retried,
after 1, 2, 4 ... s (at most 8 s); a request that times out is not retried, so the longest wait
is predictable: timeout + retries x (8 s + the time a failing answer takes). API keys come from
the provider's usual environment variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) and are never
stored or logged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from mdclust.core.errors import MdclustError
from mdclust.stages.candidates.parse import normalise, parse_items

SYSTEM = ("You help cluster image collections by a user's interest. You answer with a JSON array "
          "of strings and nothing else.")
PROMPT = ('The images are {context}. List {n} distinct values of "{interest}" that could tell '
          'these images apart when they are grouped by {interest}. Each value is a common word '
          'or a short phrase of at most two words (for "color": "red", "dark blue"). '
          'Answer with a JSON array of {n} strings, no explanations.')
MORE = ('Give {missing} more values of "{interest}", different from these: {have}. '
        'Answer with a JSON array of strings only.')
DEFAULT_CONTEXT = "a collection of photos"


@dataclass
class LLMAnswer:
    words: list[str]
    prompts: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    rounds: int = 0


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def _error_message(exc: Exception, model: str, api_base: str | None, timeout: float) -> str:
    import litellm

    who = f"LLM {model}" + (f" at {api_base}" if api_base else "")
    provider = _provider(model)
    first = " ".join(str(exc).split())[:200]
    if isinstance(exc, litellm.exceptions.AuthenticationError):
        return (f"{who}: authentication failed; set the {provider} API key in its usual "
                f"environment variable (e.g. {provider.upper()}_API_KEY)")
    if isinstance(exc, litellm.exceptions.NotFoundError):
        return f"{who}: model not found; check the model name ({first})"
    if isinstance(exc, litellm.exceptions.Timeout):
        return f"{who}: no answer within {timeout:g} s; raise --timeout or check the server"
    if isinstance(exc, litellm.exceptions.RateLimitError):
        return f"{who}: rate limited; wait and retry, or raise --retries"
    if isinstance(exc, litellm.exceptions.APIConnectionError) or \
            "connection error" in first.lower():  # litellm reports refused connections as 500
        return f"{who}: cannot connect ({first}); check --api-base and the network"
    if isinstance(exc, litellm.exceptions.BadRequestError) and "provider" in first.lower():
        return f"{who}: unknown model or provider; use a litellm model string such as gpt-4o, " \
               "anthropic/claude-3-5-sonnet-latest or openai/<name> with --api-base"
    return f"{who}: request failed: {first}"


def _worth_retrying(exc: Exception) -> bool:
    import litellm

    e = litellm.exceptions
    if isinstance(exc, e.Timeout):
        return False  # a hanging server would multiply the wait
    return isinstance(exc, (e.APIConnectionError, e.RateLimitError, e.InternalServerError,
                            e.ServiceUnavailableError, e.BadGatewayError)) or \
        "connection error" in str(exc).lower()


def _complete(litellm, model: str, messages: list, timeout: float, retries: int, extra: dict,
              api_base: str | None):
    for attempt in range(retries + 1):
        try:
            # max_retries=0: the OpenAI client under litellm would retry on its own
            return litellm.completion(model=model, messages=messages, timeout=timeout,
                                      num_retries=0, max_retries=0, temperature=0, **extra)
        except Exception as exc:  # litellm maps provider errors onto its own exception types
            if attempt < retries and _worth_retrying(exc):
                time.sleep(min(2 ** attempt, 8))
                continue
            raise MdclustError(_error_message(exc, model, api_base, timeout)) from exc


def ask_llm(interest: str, n: int, model: str, *, context: str | None = None,
            api_base: str | None = None, timeout: float = 60.0, retries: int = 2,
            rounds: int = 3, singular: Callable[[str], str] | None = None) -> LLMAnswer:
    """Ask for ``n`` values of ``interest``; ask again (at most ``rounds`` in all) if too few."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    answer = LLMAnswer(words=[])
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT.format(context=context or DEFAULT_CONTEXT,
                                                          n=n, interest=interest)}]
    extra = {}
    if api_base:
        extra["api_base"] = api_base
        if _provider(model) == "openai" and not os.environ.get("OPENAI_API_KEY"):
            extra["api_key"] = "no-key"  # local OpenAI-compatible servers usually need none
    for _ in range(max(1, rounds)):
        answer.prompts.append(messages[-1]["content"])
        resp = _complete(litellm, model, messages, timeout, retries, extra, api_base)
        try:
            text = resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise MdclustError(f"LLM {model}: an answer without a message") from exc
        answer.rounds += 1
        answer.raw.append(text)
        answer.words = normalise(answer.words + parse_items(text), singular)
        if len(answer.words) >= n:
            answer.words = answer.words[:n]
            break
        messages = messages + [{"role": "assistant", "content": text},
                               {"role": "user", "content": MORE.format(
                                   missing=n - len(answer.words), interest=interest,
                                   have=", ".join(answer.words) or "none")}]
    if not answer.words:
        raise MdclustError(f"LLM {model} gave no usable list after {answer.rounds} attempts; "
                           f"last answer began: {' '.join(answer.raw[-1].split())[:80]!r}")
    return answer
