"""The synthetic face set: many identities rendered straight into shards with exact truth
(`tasks.synthetic.dataset`; command line: `python -m tasks.synthetic`)."""
