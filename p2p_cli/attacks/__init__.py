"""Attacks on prototypical part networks and their explanations, in [0, 1] pixel space.

* :mod:`.pixels` — pixel space ↔ model input, budgets such as ``8/255``;
* :mod:`.regions` — the explanation region S and the success criterion (Hoffmann et al. 2021, Eq. 2, App. F.1);
* :mod:`.pgd` — L∞ PGD pieces and the cross-entropy attack (Madry et al. 2018);
* :mod:`.head_on_stomach` — the head-on-stomach attack (Hoffmann et al. 2021, Eq. 3);
* :mod:`.stomach_experiment` — one model's head-on-stomach numbers and figure rows;
* :mod:`.transfer` — a teacher's adversarial images shown to its Proto2Proto students;
* :mod:`.jpeg` — clean vs JPEG-compressed similarities (Hoffmann et al. 2021, §4, App. D.2);
* :mod:`.testset` — the test images the experiments draw, in a seeded order;
* :mod:`.fgsm` — FGSM training examples, the App. F.1 remedy (Wong et al. 2020).
"""
