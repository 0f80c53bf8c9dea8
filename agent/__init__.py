"""chamlab.agent: runs ON the target. Standard library only, plus the runtime it drives."""
