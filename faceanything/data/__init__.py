"""Training data (paper 3.1, 4.1, B.1): multi-view and temporal batches from shards at B.1's
resolution buckets, normalised in DA3's frame, co-jittered."""
