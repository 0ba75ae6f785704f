"""Prompt refinement through the OpenAI API (``--llm-refine``), available only with a key."""

from __future__ import annotations

import os

from opensora.errors import ConfigError

INSTRUCTIONS = (
    "Rewrite the user's idea as one detailed English description of a short video: the subject, "
    "what it does, the setting, lighting and camera. Keep every fact the user gave, add no text "
    "overlays, and answer with the description only, in at most 80 words."
)


def make_client():
    """An OpenAI client, or a one-line ConfigError saying what is missing."""
    try:
        import openai
    except ImportError:
        raise ConfigError("--llm-refine needs the 'openai' package (pip install openai) and OPENAI_API_KEY") from None
    if not os.environ.get("OPENAI_API_KEY"):
        raise ConfigError("--llm-refine needs OPENAI_API_KEY in the environment")
    return openai.OpenAI()


def refine_prompts(texts: list[str], client=None, model: str = "gpt-4o-mini") -> list[str]:
    """Each text rewritten by the chat model; an API failure is reported in one line."""
    client = client or make_client()
    refined = []
    for text in texts:
        try:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": text}]
            )
        except Exception as exc:  # network, quota and auth errors all mean the same thing to the user
            raise ConfigError(f"prompt refinement failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        refined.append(reply.choices[0].message.content.strip())
    return refined
