"""Model adaptation for pruning: split-free block forms and the Ultralytics model adapter."""
