"""Moved to ``medsage.chat`` (the one OpenAI-compatible client); this name stays for branches in flight."""

from medsage.chat import FATAL, CallError, ChatClient, ClientConfig, Image, Message, Reply, Usage  # noqa: F401

SynthClient = ChatClient
