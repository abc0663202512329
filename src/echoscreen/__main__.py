"""``python -m echoscreen`` (also what ``torchrun -m echoscreen`` runs)."""

from echoscreen.cli import main

if __name__ == "__main__":
    main()
