"""llama.cpp's CPU speed on a GGUF, for pkg-scripts/bench/cpu.sh: prefill of PROMPT tokens and
greedy decode of GEN tokens with THREADS threads, median of RUNS runs after one warm-up. Timed
by the wall clock around llama.cpp's calls, as hearth times its own (greedy argmax included;
llama-cpp-python's perf counters read zero). Prints one JSON object."""

import json
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama


def main():
    model, prompt_tokens, gen_tokens, threads, runs = sys.argv[1], *map(int, sys.argv[2:6])
    llm = Llama(model_path=model, n_ctx=prompt_tokens + gen_tokens + 8, n_batch=512,
                n_threads=threads, n_threads_batch=threads, verbose=False)
    text = ("The history of the city begins with a small settlement on the river, where traders "
            "exchanged grain, salt and cloth. Over the centuries it grew into a market town. ")
    prompt = []
    while len(prompt) < prompt_tokens:
        prompt += llm.tokenize(text.encode(), add_bos=False)
    prompt = prompt[:prompt_tokens]
    prefill, decode = [], []
    for run in range(runs + 1):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        prefilled = time.perf_counter()
        # The first token came from the prefill; each later one is a decode step.
        for _ in range(gen_tokens - 1):
            llm.eval([token])
            token = int(llm.scores[llm.n_tokens - 1].argmax())
        done = time.perf_counter()
        if run > 0:
            prefill.append(prompt_tokens / (prefilled - start))
            decode.append((gen_tokens - 1) / (done - prefilled))
    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
    }))


if __name__ == "__main__":
    main()
