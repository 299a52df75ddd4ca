"""Language models finetuned on text: supervised finetuning of chat models on (prompt, completion)
pairs (sft), and the experiments built on it (inoculation prompting)."""
