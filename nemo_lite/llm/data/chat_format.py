"""The chat format nemo_lite fine-tunes on, shared by training and generation.

A conversation is a list of {"role": "system" | "user" | "assistant", "content": "..."}; it is
rendered as `<|role|>\n` headers, each user / system content followed by a newline, each
assistant content followed by the tokenizer's eos id. Each piece is tokenized on its own and
the ids are concatenated, so a prompt for generation (`chat_prompt_pieces`) gives exactly the
ids the model saw before each answer in training.
"""

from typing import Any, Optional

CHAT_ROLES = ("system", "user", "assistant")
CHAT_HEADER = "<|{role}|>\n"
EOS = None  # a piece that stands for the tokenizer's eos id
Piece = tuple[Optional[str], bool]  # (text or EOS, trained)


def checked_messages(messages: Any, where: str, error: type = ValueError) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise error(f"{where}: 'messages' must be a non-empty list.")
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise error(f"{where}: message {n} needs a string 'content' and a 'role'.")
        if message.get("role") not in CHAT_ROLES:
            raise error(
                f"{where}: message {n} has role {message.get('role')!r}; use one of "
                f"{', '.join(CHAT_ROLES)}."
            )
    return messages


def chat_prompt_pieces(messages: Any, where: str = "messages",
                       error: type = ValueError) -> list[Optional[str]]:
    """The pieces of a prompt asking for the next assistant turn, as fine-tuning trains on it
    (each piece tokenized on its own; None stands for the eos id after an answer): the
    conversation so far, then the assistant header. What `llm.generate(chat=True)` sends to a
    model fine-tuned on chat data."""
    pieces = [text for text, _ in chat_turns(checked_messages(messages, where, error))]
    return pieces + [CHAT_HEADER.format(role="assistant")]


def chat_turns(messages: list[dict[str, str]]) -> list[Piece]:
    pieces: list[Piece] = []
    for message in messages:
        pieces.append((CHAT_HEADER.format(role=message["role"]), False))
        if message["role"] == "assistant":
            pieces += [(message["content"], True), (EOS, True)]
        else:
            pieces.append((message["content"] + "\n", False))
    return pieces
