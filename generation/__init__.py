"""Generation: answers whose every sentence cites the retrieved passages it rests on."""
