"""The synthetic sample subject: a head with FLAME's structure rendered by 16 calibrated
cameras into NeRSemble's layout, with its ground truth (depth, canonical and normal maps,
cameras, head pose). Only the sample profile and the tests import this room."""
