"""BibTeX entries of the methods p2p implements, cited by the model cards.

Keys: ``protopnet`` (Chen et al., NeurIPS 2019), ``proto2proto`` (Keswani et al., CVPR 2022),
``prototree`` (Nauta et al., CVPR 2021), ``protopshare`` (Rymarczyk et al., KDD 2021).
"""

from __future__ import annotations

CITATIONS = {
    "protopnet": """@inproceedings{chen2019looks,
  title     = {This Looks Like That: Deep Learning for Interpretable Image Recognition},
  author    = {Chen, Chaofan and Li, Oscar and Tao, Chaofan and Barnett, Alina Jade and Su, Jonathan and
               Rudin, Cynthia},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2019}
}""",
    "proto2proto": """@inproceedings{keswani2022proto2proto,
  title     = {Proto2Proto: Can You Recognize the Car, the Way I Do?},
  author    = {Keswani, Monish and Ramakrishnan, Sriranjani and Reddy, Nishant and Balasubramanian, Vineeth N.},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}""",
    "prototree": """@inproceedings{nauta2021neural,
  title     = {Neural Prototype Trees for Interpretable Fine-Grained Image Recognition},
  author    = {Nauta, Meike and van Bree, Ron and Seifert, Christin},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2021}
}""",
    "protopshare": """@inproceedings{rymarczyk2021protopshare,
  title     = {ProtoPShare: Prototypical Parts Sharing for Similarity Discovery in Interpretable Image
               Classification},
  author    = {Rymarczyk, Dawid and Struski, {\\L}ukasz and Tabor, Jacek and Zieli{\\'n}ski, Bartosz},
  booktitle = {Proceedings of the 27th ACM SIGKDD Conference on Knowledge Discovery and Data Mining},
  year      = {2021}
}""",
}
PAPERS = {"protopnet": "ProtoPNet (Chen et al., NeurIPS 2019)",
          "proto2proto": "Proto2Proto (Keswani et al., CVPR 2022)",
          "prototree": "ProtoTree (Nauta et al., CVPR 2021)", "protopshare": "ProtoPShare (Rymarczyk et al., KDD 2021)"}
