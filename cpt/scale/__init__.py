"""Where a run executes: the FSDP2 strategy, what the machine must offer, precision names, and
the CPU allocator setting."""
