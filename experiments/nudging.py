"""Nudging (Fei et al., 2024) and its reverse on GSM8K, ARC-Challenge and WordNet definitions.

Nudging: a base model (Qwen2.5-1.5B, not instruction-tuned) writes the answer; wherever its top-1
probability is below γ = 0.4, a small instruct model (Qwen2.5-0.5B-Instruct) writes the next word.
Reverse: the small trusted model writes; where its entropy is high the base model inserts up to 4
tokens, at most 32 per answer. Both alone are the baselines.

These are hub models: this machine has no generative model offline, so the run stops with how to
get them unless they are in the Hugging Face cache or given as local folders.

    python experiments/nudging.py
    python experiments/nudging.py --config.base.model=gpt2-large --config.nudger.model=PATH \\
        --config.task_options.gsm8k.path=gsm8k_test.jsonl --config.tasks=gsm8k,wordnet_definitions
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.runner = "nudging"
    cfg.name = "nudging"
    cfg.base = ml_collections.ConfigDict(dict(
        model="Qwen/Qwen2.5-1.5B", chat=False, template="Question: {question}\nAnswer:"))
    cfg.nudger = ml_collections.ConfigDict(dict(
        model="Qwen/Qwen2.5-0.5B-Instruct", chat=True, template="{question}"))
    cfg.tasks = ("gsm8k", "arc_challenge", "wordnet_definitions")  # the last one is offline (WordNet)
    cfg.task_options = ml_collections.ConfigDict(dict(
        gsm8k=dict(n=8, path="openai/gsm8k", name="main", split="test"),
        arc_challenge=dict(n=8, path="allenai/ai2_arc", name="ARC-Challenge", split="test"),
        wordnet_definitions=dict(n=8, choices=4),
    ))
    cfg.seed = 0  # which questions
    cfg.methods = ("base", "nudger", "nudging", "reverse")
    cfg.nudging = ml_collections.ConfigDict(dict(
        rule="top1", threshold=0.4, unit="word", unit_tokens=8, budget=None, penalty=0.0))
    cfg.reverse = ml_collections.ConfigDict(dict(
        rule="entropy", threshold=1.5, unit="tokens", unit_tokens=4, budget=32, penalty=0.0))
    cfg.generation = ml_collections.ConfigDict(dict(
        max_new_tokens=128, temperature=0.0, top_p=1.0, stop=("\nQuestion:", "\n\n\n"), seed=0,
        batch_size=8, max_length=512))
    cfg.dtype = "float32"
    cfg.top_words = 10
    cfg.output_dir = "results/nudging"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
