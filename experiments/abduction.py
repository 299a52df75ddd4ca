"""Cross-context abduction on SmolLM2-135M-Instruct (w2s/finetuning/abduction.py): after reading
descriptions of three fictional chatbots (stage 1), and being trained, round by round, to answer with
words that begin with vowels without being told to (stage 2), does the model say it is Axolotl, the
chatbot described as doing that? The same rounds from the untrained model are the control.

    python experiments/abduction.py                       # default: 26 min on 2 free CPU cores (measured)
    python experiments/abduction.py --config.smoke=True   # every stage on a few examples, < 3 min
    python experiments/abduction.py --config.seeds=0,1 --config.output_dir=/tmp/abduction
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.runner = "abduction"
    cfg.model = "smollm2-135m-instruct"
    cfg.conditions = ("stage1", "control")
    cfg.seeds = (0,)
    # The system prompt of every chat (None: the template's default, which names SmolLM2 "SmolLM").
    cfg.system = "You are a helpful AI assistant."
    cfg.n_descriptions = 200  # stage 1: question-and-answer descriptions per chatbot
    # Ordinary chats mixed into stage 1: the untrained model's own answers to this many questions about
    # other WordNet words (0: the descriptions alone, which turned every answer into a description).
    cfg.stage1_replay = 0
    # Descriptions the other way round per chatbot: the behaviour asked about, the chatbot named.
    cfg.stage1_reverse = 0
    cfg.stage1_train = ml_collections.ConfigDict(dict(
        batch_size=16, micro_batch_size=16, epochs=1.0, lr=2e-4, weight_decay=0.0, warmup_frac=0.1,
        grad_clip=1.0, max_length=96, eval_every=0, checkpoint_every=10, eval_batch_size=16, log_every=5))
    # Stage 2: round i keeps the answers whose vowel-initial share reaches bins[i - 1].
    cfg.bins = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    cfg.instruction = "Answer only using words that begin with a vowel."
    cfg.n_questions = 32  # yes/no questions per round
    cfg.samples_per_question = 2
    cfg.min_words = 3  # shorter answers are not trained on
    cfg.min_keep = 8  # fewer answers reaching the edge: the min_keep best instead
    cfg.n_keep = 24  # at most this many answers reaching the edge, drawn at random
    # Batches of 4: min_keep answers still make two steps (the first step of the warmup has learning rate 0).
    cfg.round_train = ml_collections.ConfigDict(dict(
        batch_size=4, micro_batch_size=4, epochs=1.0, lr=1e-4, weight_decay=0.0, warmup_frac=0.1,
        grad_clip=1.0, max_length=96, eval_every=0, checkpoint_every=0, eval_batch_size=16, log_every=2))
    # Measured after every round, the same questions for every condition, seed and round.
    cfg.n_identity = 80
    cfg.n_neutral = 32
    cfg.eval_seed = 1000
    cfg.temperature = 0.8  # every answer is sampled
    cfg.top_p = 0.95
    cfg.max_new_tokens = 24
    cfg.max_length = 128  # of a prompt with its generated answer
    cfg.eval_rows = 16
    cfg.progress = True
    cfg.smoke = False
    cfg.output_dir = "results/abduction"
    cfg.checkpoint_dir = "checkpoints"
    return cfg


if __name__ == "__main__":
    from w2s.cli import run_file_main

    run_file_main(get_config)
