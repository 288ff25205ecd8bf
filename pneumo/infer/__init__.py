"""From a decoded image to an answer: the predictor, both checks ("is this a chest X-ray?", "is this a child's
film?") and Grad-CAM."""
