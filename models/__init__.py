"""The Guess What Moves method as pure math and networks: motion models and their closed-form fit,
the loss, segmentation networks, and the merging of regions into foreground/background. No I/O."""
