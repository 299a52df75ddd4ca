"""Constructed cases written by a chat model: the cleaning rules, the labels the requests imply,
what is never kept, and one real chat model writing through the chat template."""
import types

import pytest

from w2s.active_learning import written
from w2s.active_learning.constructed import normalised
from w2s.config import ConfigError


class Scripted:
    """Replies by rule to each request, recording the requests."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    def complete(self, chats, cfg, *, desc=None):
        users = [c.messages[-1]["content"] for c in chats]
        self.requests += users
        return [types.SimpleNamespace(text=self.reply(u)) for u in users]


def source_of(request: str) -> str:
    return request.split("Text: ", 1)[1]


def test_clean_keeps_the_first_line_unquoted_and_drops_echoes_and_rambling():
    assert written.clean('\n  "What a grand day!"\nThis keeps its meaning.', "what a good day") == "What a grand day!"
    assert written.clean("Text: a fine day", "a good day") == "a fine day"
    assert written.clean("Rewrite this text in other words: a good day", "a good day") is None
    assert written.clean("   \n ", "a good day") is None
    assert written.clean("x" * 61, "a good day") is None  # over three times the source (at least 20 chars)


def test_written_cases_carry_the_implied_label_and_avoid_sources_tests_and_repeats():
    examples = [(f"tweet number {i}", i % 2) for i in range(10)] + [("long " * 100, 1)]
    def reply(request):
        text = source_of(request)
        if text == "tweet number 3":
            return text  # an echo of its source
        if text == "tweet number 5":
            return "a test tweet"
        return "the same reply" if text in ("tweet number 7", "tweet number 8") else f"{text}, rewritten"
    writer = Scripted(reply)
    made = written.written(writer, examples, ["A  test tweet"], n=100, seed=0, batch=4)
    assert len(writer.requests) == 10  # the long source is never sent
    assert [r.split("\n")[0] for r in writer.requests[:2]] == [written.REQUESTS[k][0].split("\n")[0]
                                                               for k in ("paraphrase", "opposite")]
    texts = [c.text for c in made]
    assert "tweet number 3" not in texts and "a test tweet" not in texts and texts.count("the same reply") == 1
    assert len(made) == 7 and len({normalised(t) for t in texts}) == 7
    for c in made:
        source, label = examples[c.source]
        assert c.text in (f"{source}, rewritten", "the same reply")
        assert c.truth == (1 - label if c.kind == "opposite" else label)
    again = written.written(Scripted(reply), examples, ["A  test tweet"], n=100, seed=0, batch=4)
    assert again == made  # a seeded order, greedy writing
    assert len(written.written(Scripted(reply), examples, [], n=3, seed=0, batch=4)) == 3


def test_a_writer_is_refused_for_wordnet_category_tasks():
    with pytest.raises(ConfigError, match="new lemmas of WordNet's lexicon"):
        written.build("smollm2-135m-instruct", "wordnet_living", [("oak", 1)], [], 4, 0)


def test_a_real_chat_model_writes_cases(offline_model):
    offline_model("smollm2-135m-instruct")
    examples = [("I love this new phone, the screen is amazing", 1), ("worst service ever, never going back", 0),
                ("the game last night was so boring", 0), ("had a great time with friends today", 1)]
    made = written.build("smollm2-135m-instruct", "tweet_sentiment", examples, ["had a great time today"], 4, 0)
    assert made and all(c.kind in written.REQUESTS and c.text.strip() for c in made)
    assert not {normalised(c.text) for c in made} & {normalised(t) for t, _ in examples}
