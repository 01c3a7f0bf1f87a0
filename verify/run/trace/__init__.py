"""Where two devices part: chosen module outputs on both sides for the same input, compared.

Forward hooks (torch `register_forward_hook`) on the policy's own modules record each chosen output
(configs/trace.yaml) in execution order: for pi0 the vision tower and image projector once per camera,
every VLM layer in the prefix pass, then per flow-matching (Euler) step the projections, every
action-expert layer, `action_out_proj` (the velocity v_t) and x_t after the step, computed from the
hooked x_t and v_t exactly as lerobot's loop does (verify_ate.verify.upstream.pi0_modules).

The two sides run one after the other, never both loaded. Memory stays bounded: the reference pass keeps
an exact CPU copy of each output up to a cap and a CountSketch beyond it; the device-under-test pass
compares inside its hook and keeps only numbers; with a dump folder every output of both sides goes to
safetensors files instead. The traced batch is the batch the comparison ran, and only one row of it is
kept, so a traced run reproduces the compared actions bit for bit on the same device and thread count.

One module per job: `config` (what to trace, from configs/trace.yaml), `hooks` (recording),
`sketch` (the compact copy), `store` (the reference pass), `comparator` (the device-under-test pass and
its entries), `result` (the findings), `divergence` (both passes, one frame or a sweep's worst).
`config` is all the command line needs; the others load torch and the fence, and are imported where a
trace runs.
"""
