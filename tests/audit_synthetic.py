"""Realistic synthetic datasets for judging the audit's alignment check, and planted misplacements.

Real hand labels are imperfect: their boundaries wander 1-2 px around the image's edges, some label changes show
no edge at all (similar colours), textures and shadows make edges no label follows, consecutive video frames or
stack slices are near-duplicates (a neighbour's mask fits almost as well), and a whole dataset may sit a pixel
off. Each generator here builds that in, so the audit's false-alarm rate on untouched pairs and its recall on
planted misplacements are measured on data that is as hard as real data in those respects:

- `street_scenes`: RGB frames of a slowly panning and zooming camera along synthetic streets (11 classes plus
  an ignore value, CamVid-like), labels 1 px off dataset-wide;
- `em_slices`: gray EM-like slices of one 3D cell volume (membrane 0 / cell 1, thick dark membranes, organelles
  with edges of their own, membranes that fade);
- `blob_frames`: RGB images of smooth random label maps with 6 classes that slowly evolve frame to frame, two
  classes nearly the same colour;
- `lesion_images`: dermoscopy-like RGB photographs of skin with one smooth, soft-edged, often faint lesion each,
  hair, skin texture and vignetting, outlined smoothly by hand (ISIC-like; large images on request);
- `polyp_frames`: endoscopy-like RGB frames with one or two smooth polyps, sometimes filling most of the frame,
  mucosal folds, specular highlights and a dark frame border (Kvasir/CVC-like);
- `retina_images`: fundus-like RGB photographs with a tree of thin vessels, the optic disc and a circular field
  of view outside which the labels are ignore (DRIVE-like).

Masks are class indices (0..K-1) with IGNORE (255) for ignore pixels, as `loader.DataLoader.raw_pair` gives them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

IGNORE = 255
STREET_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian",
                  "bicyclist")
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
EM_CLASSES = ("membrane", "cell")
BLOB_CLASSES = ("background", "a", "b", "c", "d", "e")


# ---------------------------------------------------------------- shared pieces


def smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (wide filters drawn at a lower resolution
    and enlarged: the same look, far faster)."""
    factor = max(1, int(sigma // 3))
    small = [-(-side // factor) + (factor > 1) for side in shape]
    field = ndimage.gaussian_filter(rng.standard_normal(small), sigma / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1)[: shape[0], : shape[1]]
    return field / max(field.std(), 1e-9)


def hand_drawn(labels: np.ndarray, rng, amplitude: float = 1.2, scale: float = 6.0) -> np.ndarray:
    """The label map resampled through a smooth random displacement field (about +-amplitude px): boundaries that
    wander around the true ones as a hand-drawn outline does, independently in every example."""
    shape = labels.shape
    rows, cols = np.indices(shape, dtype=np.float32)
    rows += amplitude * smooth_noise(rng, shape, scale)
    cols += amplitude * smooth_noise(rng, shape, scale)
    return ndimage.map_coordinates(labels, [rows, cols], order=0, mode="nearest")


def moved(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """array moved dy rows down and dx columns right; uncovered pixels get fill."""
    out = np.full_like(array, fill)
    h, w = array.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        array[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def finish_image(rgb: np.ndarray, rng, blur: float, noise: float) -> np.ndarray:
    """Optical blur, sensor noise, 8-bit quantisation."""
    rgb = ndimage.gaussian_filter(rgb, (blur, blur, 0)[: rgb.ndim])
    rgb = rgb + noise * rng.standard_normal(rgb.shape)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- street scenes


def _box(labels, colour, value, rgb, top, bottom, left, right):
    """Paint a rectangle into the label map and the colour image (clipped to the frame)."""
    top, bottom, left, right = (round(v) for v in (top, bottom, left, right))
    labels[max(top, 0):bottom, max(left, 0):right] = value
    rgb[max(top, 0):bottom, max(left, 0):right] = colour


def _blob(rng, shape, centre, radii, roughness=0.25):
    """A filled irregular ellipse (bool map): a smooth random radius modulation, like a tree crown or a bush."""
    reach = [int(r * (1 + 3 * roughness)) + 2 for r in radii]
    top, left = max(int(centre[0]) - reach[0], 0), max(int(centre[1]) - reach[1], 0)
    bottom, right = min(int(centre[0]) + reach[0], shape[0]), min(int(centre[1]) + reach[1], shape[1])
    found = np.zeros(shape, bool)
    if bottom <= top or right <= left:
        return found
    rows, cols = np.mgrid[top:bottom, left:right].astype(np.float32)
    r = np.hypot((rows - centre[0]) / radii[0], (cols - centre[1]) / radii[1])
    found[top:bottom, left:right] = r < 1 + roughness * smooth_noise(rng, r.shape, max(radii) / 3)
    return found


def street_world(rng, height: int, width: int):
    """One long street: (labels (H, W) uint8, colour image float (H, W, 3)), drawn back to front."""
    s = height / 360
    labels = np.full((height, width), SKY, np.uint8)
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    sky = np.array([0.62, 0.72, 0.88]) + 0.05 * rng.standard_normal(3)
    rgb = np.clip(sky + (0.15 * rows / height) + 0.04 * smooth_noise(rng, (height, width), 20 * s)[..., None], 0, 1)
    ground = 0.55 * height + 0.02 * height * np.sin(np.arange(width) / (250 * s) + rng.uniform(0, 6))
    kerb = ground + 0.1 * height + 0.03 * height * np.sin(np.arange(width) / (330 * s) + rng.uniform(0, 6))
    grey = rng.uniform(0.35, 0.5)
    for x in range(width):  # pavement and road below the ground line; the kerb shows little contrast
        g, k = int(ground[x]), int(kerb[x])
        labels[g:k, x], rgb[g:k, x] = PAVEMENT, grey + 0.06
        labels[k:, x], rgb[k:, x] = ROAD, grey
    rgb[int(0.6 * height):] += 0.03 * smooth_noise(rng, (height - int(0.6 * height), width), 1)[..., None]
    x = -rng.uniform(0, 80 * s)
    while x < width:  # buildings: facades with window grids (edges no label follows)
        w = rng.uniform(60, 170) * s
        roof = rng.uniform(0.05, 0.38) * height
        if rng.random() < 0.85:
            colour = np.clip(rng.uniform(0.3, 0.75) + 0.08 * rng.standard_normal(3), 0, 1)
            base = int(ground[int(np.clip(x + w / 2, 0, width - 1))])
            _box(labels, colour, BUILDING, rgb, roof, base, x, x + w)
            window = colour * rng.uniform(0.35, 0.6)
            for wy in np.arange(roof + 10 * s, base - 15 * s, rng.uniform(22, 34) * s):
                for wx in np.arange(x + 6 * s, x + w - 12 * s, rng.uniform(16, 26) * s):
                    rgb[int(wy):int(wy + 9 * s), max(int(wx), 0):max(int(wx + 7 * s), 0)] = window
        x += w
    for _ in range(int(width / (120 * s))):  # trees: leafy crowns in front of the buildings
        cx, cy, r = rng.uniform(0, width), rng.uniform(0.2, 0.45) * height, rng.uniform(22, 55) * s
        crown = _blob(rng, labels.shape, (cy, cx), (r * 0.9, r))
        trunk = np.zeros_like(crown)
        trunk[int(cy):int(ground[int(np.clip(cx, 0, width - 1))]) + 4, int(cx - 3 * s):int(cx + 3 * s) + 1] = True
        leaves = np.array([0.2, 0.35, 0.15]) + 0.05 * rng.standard_normal(3)
        texture = 0.12 * rng.standard_normal(labels.shape)[..., None]
        labels[crown | trunk] = TREE
        rgb[crown] = np.clip(leaves + texture[crown], 0, 1)
        rgb[trunk & ~crown] = [0.25, 0.18, 0.1]
    for _ in range(int(width / (200 * s))):  # fences along the pavement
        x0, length = rng.uniform(0, width), rng.uniform(50, 150) * s
        g = ground[int(np.clip(x0, 0, width - 1))]
        colour = np.array([0.45, 0.32, 0.2]) + 0.05 * rng.standard_normal(3)
        _box(labels, colour, FENCE, rgb, g - 0.07 * height, g + 0.015 * height, x0, x0 + length)
        for slat in np.arange(x0, x0 + length, 7 * s):
            rgb[int(g - 0.07 * height):int(g + 0.015 * height), int(slat):int(slat + 2 * s) + 1] *= 0.7
    for _ in range(int(width / (90 * s))):  # poles, some with a sign
        x0, top = rng.uniform(0, width), rng.uniform(0.08, 0.3) * height
        g = kerb[int(np.clip(x0, 0, width - 1))]
        _box(labels, [0.3, 0.3, 0.32], POLE, rgb, top, g, x0, x0 + rng.uniform(3, 6) * s)
        if rng.random() < 0.5:
            _box(labels, np.clip(rng.uniform(0.1, 1, 3), 0, 1), SIGN, rgb, top, top + 16 * s, x0 - 6 * s, x0 + 12 * s)
    for _ in range(int(width / (110 * s))):  # people on the pavement
        cx = rng.uniform(0, width)
        g = kerb[int(np.clip(cx, 0, width - 1))]
        figure = _blob(rng, labels.shape, (g - 25 * s, cx), (25 * s, 7 * s), 0.1)
        value = PEDESTRIAN if rng.random() < 0.7 else BICYCLIST
        labels[figure] = value
        rgb[figure] = np.clip(rng.uniform(0.05, 0.6, 3), 0, 1)
    for _ in range(int(width / (160 * s))):  # cars on the road, with dark windows and wheels
        cx, bottom = rng.uniform(0, width), rng.uniform(0.78, 0.98) * height
        w, h = rng.uniform(80, 150) * s, rng.uniform(38, 55) * s
        body = _blob(rng, labels.shape, (bottom - h / 2, cx), (h / 2, w / 2), 0.03)
        body &= np.indices(labels.shape)[0] < bottom
        colour = np.clip(rng.uniform(0.05, 0.95, 3), 0, 1)
        labels[body] = CAR
        rgb[body] = colour
        glass = body & (np.abs(np.indices(labels.shape)[0] - (bottom - 0.75 * h)) < 0.12 * h)
        rgb[glass] = colour * 0.3
    shade = 0.8 + 0.2 * np.clip(smooth_noise(rng, labels.shape, 40 * s), -1.5, 1.5)[..., None]
    for _ in range(int(width / (150 * s))):  # cast shadows across road, pavement and kerb
        cx, cy = rng.uniform(0, width), rng.uniform(0.62, 0.95) * height
        shadow = _blob(rng, labels.shape, (cy, cx), (rng.uniform(8, 25) * s, rng.uniform(30, 80) * s))
        shade[shadow] *= 0.6
    return labels, np.clip(rgb * shade, 0, 1)


def _frame(world_labels, world_rgb, x0, zoom, shape):
    """One camera frame: a crop of the world at x0, magnified by zoom about the frame's centre."""
    height, width = shape
    rows, cols = np.indices(shape, dtype=np.float32)
    rows = (rows - height / 2) / zoom + height / 2
    cols = (cols - width / 2) / zoom + width / 2 + x0
    labels = ndimage.map_coordinates(world_labels, [rows, cols], order=0, mode="nearest")
    rgb = np.stack([ndimage.map_coordinates(world_rgb[..., c], [rows, cols], order=1, mode="nearest")
                    for c in range(3)], axis=-1)
    return labels, rgb


def _void(labels, rng, s):
    """CamVid-like ignore pixels: a thin band along some object outlines and a few unlabelled clutter blobs."""
    out = labels.copy()
    outline = (ndimage.grey_dilation(labels, 3) != ndimage.grey_erosion(labels, 3))
    outline &= np.isin(labels, [CAR, PEDESTRIAN, BICYCLIST, SIGN]) | (smooth_noise(rng, labels.shape, 10) > 1.0)
    out[outline] = IGNORE
    for _ in range(rng.integers(0, 3)):
        cy, cx = rng.uniform(0.5, 1) * labels.shape[0], rng.uniform(0, labels.shape[1])
        out[_blob(rng, labels.shape, (cy, cx), (8 * s + 2, 12 * s + 2))] = IGNORE
    return out


def street_scenes(n: int = 60, shape=(144, 192), sequences: int = 4, offset=(-1, 0), seed: int = 0):
    """n RGB frames from `sequences` slowly panning, zooming drives; (images, masks, sequence id per frame).

    The labels are hand-drawn-like (`hand_drawn`), have ignore pixels, and sit `offset` (rows, cols) away from
    the image content in every frame: a dataset-wide offset (the default: 1 px up, as in the issue's data).
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    s = height / 360
    per = -(-n // sequences)
    images, masks, seq = [], [], []
    for q in range(sequences):
        speed = rng.uniform(0.015, 0.04) * width
        world_labels, world_rgb = street_world(rng, height, int(width * 1.3 + speed * per) + 2)
        for t in range(min(per, n - len(images))):
            labels, rgb = _frame(world_labels, world_rgb, speed * t, 1 + 0.004 * t, shape)
            images.append(finish_image(rgb, rng, blur=0.8, noise=0.025))
            mask = _void(hand_drawn(labels, rng, 1.2 * max(s, 0.5), 8 * s + 2), rng, s)
            masks.append(moved(mask, *offset, IGNORE))
            seq.append(q)
    return images, masks, np.array(seq)


# ---------------------------------------------------------------- EM slices


def em_slices(n: int = 40, shape=(160, 160), cell_size: float = 28, z_step: float = 1.5, offset=(0, 0), seed: int = 0):
    """n consecutive gray slices through one volume of cells; masks 0 membrane / 1 cell (0/255 in the files).

    Membranes in the image are dark lines of varying width and darkness (some nearly vanish); cells hold
    mitochondria and vesicles (dark, with edges of their own); the labelled membranes are drawn thinner or
    thicker than the image shows and wander like hand-drawn lines.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    depth = n * z_step + 2 * cell_size
    n_cells = int(height * width * depth / cell_size ** 3 * 1.6)
    tree = cKDTree(rng.uniform([0, 0, 0], [height, width, depth], size=(n_cells, 3)))
    darkness = rng.uniform(0.2, 1.0, n_cells)  # how visible each cell's outline is in the image
    tone = rng.uniform(-1, 1, n_cells)
    n_organelles = int(height * width * depth / 900)  # elongated mitochondria and vesicles
    centres = rng.uniform([0, 0, 0], [height, width, depth], size=(n_organelles, 3))
    lengths, radii = rng.uniform(3, 7, n_organelles), rng.uniform(1, 2.5, n_organelles)
    rows, cols = np.indices(shape, dtype=np.float32)
    images, masks = [], []
    for k in range(n):
        z = cell_size + k * z_step
        points = np.column_stack([rows.ravel(), cols.ravel(), np.full(rows.size, z)])
        dist, index = tree.query(points, k=2)
        gap = (dist[:, 1] - dist[:, 0]).reshape(shape)
        owner = index[:, 0].reshape(shape)
        seen = gap < 2.2 + 0.8 * smooth_noise(rng, shape, 12)
        strength = np.maximum(darkness[owner], darkness[index[:, 1].reshape(shape)])
        image = 0.68 + 0.05 * smooth_noise(rng, shape, 4) + 0.04 * tone[owner]
        image = np.where(seen, image - 0.45 * strength, image)
        for o in np.flatnonzero(np.abs(centres[:, 2] - z) < 2 * radii):  # the organelles this slice cuts
            centre, length, radius = centres[o], lengths[o], radii[o]
            top, left = max(int(centre[0] - length), 0), max(int(centre[1] - radius), 0)
            box = np.s_[top:int(centre[0] + length) + 2, left:int(centre[1] + radius) + 2]
            inside = np.hypot((rows[box] - centre[0]) / length, (cols[box] - centre[1]) / radius) < 1
            image[box] -= 0.3 * inside
        images.append(finish_image(image, rng, blur=1.0, noise=0.04))
        labelled = hand_drawn(gap < rng.uniform(1.4, 2.8), rng, 1.0, 5)
        masks.append(moved(np.where(labelled, 0, 1).astype(np.uint8), *offset, IGNORE))
    return images, masks, np.zeros(n, int)


# ---------------------------------------------------------------- generic blobs


def blob_frames(n: int = 40, shape=(128, 128), classes: int = 6, offset=(0, 1), drift: int = 0,
                jitter: float = 1.2, seed: int = 0):
    """n RGB images of smooth random label maps that evolve slowly from frame to frame (a few sequences).

    Classes 1 and 2 get nearly the same colour (their shared boundary shows almost no edge); every class has a
    texture, a shading field crosses the boundaries; labels are hand-drawn-like (boundaries wander by about
    `jitter` px) and `offset` away, plus a random offset of up to `drift` px per example (a sloppy annotator).
    """
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.1, 0.9, (classes, 3))
    colours[2] = colours[1] + 0.04
    images, masks, seq = [], [], []
    per = 10
    for q in range(-(-n // per)):
        start = rng.standard_normal((classes, *shape))
        end = rng.standard_normal((classes, *shape))
        for t in range(min(per, n - len(images))):
            mix = np.cos(0.08 * t) * start + np.sin(0.08 * t) * end
            fields = ndimage.gaussian_filter(mix, (0, 9, 9))
            fields[0] += 0.03  # a little more background than any one class
            labels = fields.argmax(axis=0).astype(np.uint8)
            texture = 0.07 * ndimage.gaussian_filter(rng.standard_normal((*shape, 3)), (1.2, 1.2, 0))
            shade = 0.85 + 0.15 * smooth_noise(rng, shape, 15)[..., None]
            images.append(finish_image((colours[labels] + texture) * shade, rng, blur=1.0, noise=0.03))
            own = np.array(offset) + rng.integers(-drift, drift + 1, 2)
            masks.append(moved(hand_drawn(labels, rng, jitter, 6), *own, IGNORE))
            seq.append(q)
    return images, masks, np.array(seq)


# ---------------------------------------------------------------- faint spots


def faint_spots(n: int = 60, shape=(128, 128), seed: int = 0):
    """n noisy gray images with one faint round spot each (a lesion-like target: contrast 0.06-0.3 against
    noise of 0.08), masks 0 background / 1 spot outlined by hand; every image an unrelated example."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape, dtype=np.float32)
    images, masks = [], []
    for _ in range(n):
        centre = rng.uniform(20, np.array(shape) - 20)
        radius = rng.uniform(5, 16)
        spot = np.hypot(rows - centre[0], cols - centre[1]) < radius * (1 + 0.15 * smooth_noise(rng, shape, 6))
        image = 0.4 + 0.1 * smooth_noise(rng, shape, 12) + rng.uniform(0.06, 0.3) * spot
        images.append(finish_image(image, rng, blur=1.5, noise=0.08))
        masks.append(hand_drawn(spot.astype(np.uint8), rng, 1.2, 4))
    return images, masks, np.arange(n)


# ---------------------------------------------------------------- published kinds: lesions, polyps, retinas

LESION_CLASSES = ("background", "lesion")
POLYP_CLASSES = ("background", "polyp")
RETINA_CLASSES = ("background", "vessel")
LESION_SHAPES = ((450, 600), (540, 720), (768, 1024))  # ISIC's sizes vary from 450x600 up to 1936x2592
POLYP_SHAPES = ((288, 384), (332, 487), (480, 576))    # CVC-ClinicDB's 288x384; Kvasir's vary


def _star_blob(rng, shape, centre, radius: float, roughness: float, aspect: float = 1.0) -> np.ndarray:
    """Signed distance (px, approximately; positive inside) to a smooth star-shaped outline: a circle whose
    radius varies with the angle by a few random low harmonics (roughness: their size), stretched by aspect."""
    rows, cols = np.indices(shape, dtype=np.float32)
    dy, dx = (rows - centre[0]) * aspect, cols - centre[1]
    angle, distance = np.arctan2(dy, dx), np.hypot(dy, dx)
    outline = np.ones_like(angle)
    for k in range(2, 7):
        outline += roughness / k * rng.standard_normal() * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return radius * outline - distance


def _soft(field: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 across the outline field = 0 over about `width` px: a soft edge (logistic)."""
    return (0.5 + 0.5 * np.tanh(field / (2 * max(width, 1e-3)))).astype(np.float32)


def _traced(field: np.ndarray, rng, margin: float, amplitude: float, scale: float) -> np.ndarray:
    """The region an annotator outlines: field > -margin (margin > 0: drawn that far outside the visible edge),
    with a smooth outline that wanders about +-amplitude px (`hand_drawn` with a long correlation length)."""
    return hand_drawn((field > -margin).astype(np.uint8), rng, amplitude, scale)


def _curves(rng, shape, count: int, length) -> np.ndarray:
    """count thin random curves (hairs, folds) as a 0/1 float map, one px wide: random walks with a slowly
    turning direction."""
    canvas = np.zeros(shape, np.float32)
    for _ in range(count):
        steps = int(rng.uniform(*length))
        turn = np.cumsum(rng.normal(0, 0.03, steps)) + rng.normal(0, 1.5 / steps) * np.arange(steps)
        angle = rng.uniform(0, 2 * np.pi) + turn
        y = rng.uniform(0, shape[0]) + np.cumsum(np.sin(angle))
        x = rng.uniform(0, shape[1]) + np.cumsum(np.cos(angle))
        inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
        canvas[y[inside].astype(int), x[inside].astype(int)] = 1
    return canvas


def _lines(canvas: np.ndarray, width: float) -> np.ndarray:
    """One-px curves (see _curves) drawn `width` px wide with soft sides, peak 1."""
    return np.minimum(ndimage.gaussian_filter(canvas, width / 2) * (np.sqrt(2 * np.pi) * width / 2), 1)


def _vignette(shape, strength: float, power: float = 4) -> np.ndarray:
    """1 in the centre, falling to 1 - strength in the corners (a lens's or a dermoscope's fall-off)."""
    rows, cols = np.indices(shape, dtype=np.float32)
    r = np.hypot((rows - shape[0] / 2) / (shape[0] / 2), (cols - shape[1] / 2) / (shape[1] / 2)) / np.sqrt(2)
    return 1 - strength * r ** power


def _enlarged(array: np.ndarray, shape) -> np.ndarray:
    """A smooth (H, W) or (H, W, C) float array enlarged to (H, W) `shape` (bilinear, Pillow: 100x faster than
    scipy's zoom)."""
    from PIL import Image

    size = (shape[1], shape[0])
    if array.ndim == 3:
        return np.stack([_enlarged(array[..., c], shape) for c in range(array.shape[2])], axis=-1)
    return np.asarray(Image.fromarray(array.astype(np.float32), "F").resize(size, Image.BILINEAR))


def lesion_images(n: int = 24, shapes=LESION_SHAPES, seed: int = 0):
    """n dermoscopy-like RGB photographs (shapes cycled), one lesion each; masks 0 skin / 1 lesion.

    What makes them hard: the lesion's border is soft (a ramp of 1-8 px at 600 px) and often faint (a pale naevus
    on pale skin), its inside is blotchy, hairs cross skin and lesion (thin, strong edges no label follows), the
    skin has texture and uneven light, the corners are vignetted (some to black, a dermoscope's round field),
    and the outline is traced by hand: smooth, wandering 1-3 px (at 600 px; more in larger images) and drawn up
    to a few px outside the visible edge. Every image is an unrelated example. Images larger than 1024 px are
    drawn at most 1024 px wide and enlarged before their noise is added (the same look, far faster).
    """
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for k in range(n):
        shape = tuple(shapes[k % len(shapes)])
        zoom = -(-max(shape) // 1024)
        small = tuple(-(-side // zoom) for side in shape)
        s = max(small) / 600  # sizes below are for a 600 px image
        skin = np.array([0.85, 0.64, 0.56]) + 0.04 * rng.standard_normal(3)
        light = 1 + 0.07 * smooth_noise(rng, small, 80 * s)
        texture = 0.025 * smooth_noise(rng, small, 1.5 * s)  # pores and skin lines
        radius = rng.uniform(0.12, 0.42) * min(small)
        centre = np.array(small) * (0.5 + rng.uniform(-0.12, 0.12, 2))
        field = _star_blob(rng, small, centre, radius, rng.uniform(0.1, 0.35), rng.uniform(0.7, 1.3))
        opacity = _soft(field, rng.uniform(1, 8) * s)
        lesion = skin + rng.uniform(0.2, 1) * (np.array([0.42, 0.27, 0.2]) + 0.05 * rng.standard_normal(3) - skin)
        blotches = 1 + 0.18 * smooth_noise(rng, small, 10 * s) - 0.1 * np.maximum(smooth_noise(rng, small, 3 * s), 0)
        rgb = (skin * (1 - opacity)[..., None] + lesion * (opacity * blotches)[..., None]) * (light + texture)[..., None]
        hair = _lines(_curves(rng, small, int(rng.choice([0, 2, 8, 25])), (100 * s, 500 * s)), rng.uniform(1, 3) * s)
        rgb *= 1 - 0.75 * hair[..., None]
        rgb *= _vignette(small, rng.uniform(0, 1.1), rng.choice([2, 6]))[..., None].clip(0.02)
        if zoom > 1:
            rgb, field, s = _enlarged(rgb, shape), _enlarged(field, shape) * zoom, s * zoom
        images.append(finish_image(rgb, rng, blur=0.7, noise=0.015))
        masks.append(_traced(field, rng, rng.uniform(-1, 4) * s, rng.uniform(1, 3) * s, 30 * s))
    return images, masks, np.arange(n)


def polyp_frames(n: int = 30, shapes=POLYP_SHAPES, seed: int = 0):
    """n endoscopy-like RGB frames (shapes cycled), one or two polyps each; masks 0 mucosa / 1 polyp.

    Polyps are smooth domes of nearly the mucosa's colour with soft borders, a third of them close up (filling
    most of the frame, the outline partly outside it); mucosal folds and vessels, specular highlights (small,
    saturated: the strongest edges in the frame), light that falls off to the sides, and in half the frames a
    black border with rounded corners and an overlay box (no polyp is labelled where they hide it). Outlines
    traced by hand.
    """
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for k in range(n):
        shape = tuple(shapes[k % len(shapes)])
        s = max(shape) / 400
        mucosa = np.array([0.8, 0.45, 0.38]) + 0.04 * rng.standard_normal(3)
        light = _vignette(shape, rng.uniform(0.3, 0.7), 2) * (1 + 0.1 * smooth_noise(rng, shape, 40 * s))
        folds = _lines(_curves(rng, shape, int(rng.integers(2, 7)), (80 * s, 300 * s)), rng.uniform(3, 8) * s)
        vessels = _lines(_curves(rng, shape, int(rng.integers(5, 30)), (20 * s, 80 * s)), 1.2 * s)
        rgb = mucosa * (light * (1 - 0.3 * folds))[..., None] - 0.12 * vessels[..., None] * [0, 1, 1]
        labels = np.zeros(shape, np.uint8)
        close_up = rng.random() < 0.35
        for _ in range(1 if close_up or rng.random() < 0.7 else 2):
            radius = rng.uniform(0.45, 0.75) if close_up else rng.uniform(0.1, 0.3)
            centre = np.array(shape) * (0.5 + rng.uniform(-0.25, 0.25, 2) * (0.4 if close_up else 1))
            field = _star_blob(rng, shape, centre, radius * min(shape), rng.uniform(0.05, 0.25), rng.uniform(0.8, 1.25))
            opacity = _soft(field, rng.uniform(1.5, 6) * s)
            dome = np.clip(field / (radius * min(shape)), 0, 1) ** 0.5  # lit from the camera: brighter on top
            tint = mucosa * (1 + rng.uniform(-0.15, 0.12, 3)) * (0.9 + 0.15 * dome)[..., None]
            rgb = rgb * (1 - opacity)[..., None] + tint * (light * opacity)[..., None]
            labels |= _traced(field, rng, rng.uniform(-1, 3) * s, rng.uniform(1, 3) * s, 25 * s)
        glints = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(3, 15))):
            glints = np.maximum(glints, _soft(_star_blob(rng, shape, rng.uniform(0, 1, 2) * shape,
                                                          rng.uniform(1.5, 6) * s, 0.4), 0.7))
        rgb = rgb * (1 - glints)[..., None] + glints[..., None]
        if rng.random() < 0.5:  # the scope's black border (rounded corners) and an overlay box, unlabelled
            corner = _star_blob(rng, shape, np.array(shape) / 2, 0.62 * np.hypot(*shape), 0)
            rgb *= _soft(corner, 1)[..., None]
            box = (slice(int(0.75 * shape[0]), shape[0]), slice(0, int(0.22 * shape[1])))
            rgb[box] = [0.02, 0.02, 0.02]
            labels[corner < 0] = 0
            labels[box] = 0
        images.append(finish_image(np.clip(rgb, 0, 1), rng, blur=0.8, noise=0.02))
        masks.append(labels)
    return images, masks, np.arange(n)


def _vessel_tree(rng, shape, disc, fov_centre, fov_radius: float, width: float):
    """Centre lines of a retina's vessels: (rows, cols, widths) of points one px apart, four arcades leaving the
    optic disc at `disc` and branching into ever thinner vessels until they leave the field of view."""
    points = []
    temporal = 0 if disc[1] < shape[1] / 2 else np.pi  # the arcades bend round the macula
    stack = [(disc[0], disc[1], temporal + turn, width, 0.9 * fov_radius * rng.uniform(1, 1.6))
             for turn in (-1.2, 1.2, np.pi - 0.9, np.pi + 0.9)]
    while stack:
        y, x, angle, w, length = stack.pop()
        for _ in range(int(length)):
            angle += rng.normal(0, 0.05)
            y, x = y + np.sin(angle), x + np.cos(angle)
            if np.hypot(y - fov_centre[0], x - fov_centre[1]) > fov_radius:
                break
            points.append((y, x, w))
            if w > 1.4 and rng.random() < 0.015:
                side = rng.choice([-1, 1])
                stack.append((y, x, angle + side * rng.uniform(0.5, 1.2), w * rng.uniform(0.5, 0.8),
                              length * rng.uniform(0.3, 0.7)))
                w *= 0.92
    return np.array(points).T if points else np.zeros((3, 0))


def retina_images(n: int = 20, shape=(584, 565), seed: int = 0):
    """n fundus-like RGB photographs; masks 0 background / 1 vessel, IGNORE outside the circular field of view
    (as the loader gives a dataset whose region-of-interest mask is 0 there).

    Vessels 1-7 px wide, the thinnest barely visible (yet labelled, as manual tracings are), some faint ones
    not labelled; the bright optic disc, the dark macula and the field of view's rim are strong edges no label
    follows; light varies across the field. Labels follow the vessels with about 0.7 px of wander and their own
    idea of the width.
    """
    rng = np.random.default_rng(seed)
    images, masks = [], []
    rows, cols = np.indices(shape, dtype=np.float32)
    s = min(shape) / 565
    for _ in range(n):
        fov_centre = np.array(shape) / 2 + rng.normal(0, 3, 2)
        fov_radius = 0.47 * min(shape)
        fov = np.hypot(rows - fov_centre[0], cols - fov_centre[1]) < fov_radius
        disc = fov_centre + [rng.normal(0, 10 * s), rng.choice([-1, 1]) * rng.uniform(0.45, 0.6) * fov_radius]
        macula = fov_centre + [rng.normal(0, 10 * s), (fov_centre[1] - disc[1]) * 0.45]
        y, x, width = _vessel_tree(rng, shape, disc, fov_centre, fov_radius - 2, rng.uniform(5, 7) * s)
        centre_line = np.zeros(shape, np.float32)
        centre_line[y.astype(int), x.astype(int)] = width
        distance, (near_y, near_x) = ndimage.distance_transform_edt(centre_line == 0, return_indices=True)
        vessel_width = centre_line[near_y, near_x]
        profile = np.clip(vessel_width / 2 + 0.5 - distance, 0, 1)  # 1 inside, a 1-px soft side
        depth = profile * np.clip(0.15 + 0.12 * vessel_width, 0, 0.7)  # thin vessels barely darker
        background = np.array([0.78, 0.38, 0.16]) + 0.04 * rng.standard_normal(3)
        light = 0.75 + 0.2 * smooth_noise(rng, shape, 60 * s) - 0.35 * np.exp(
            -((rows - macula[0]) ** 2 + (cols - macula[1]) ** 2) / (2 * (40 * s) ** 2))
        disc_glow = _soft(_star_blob(rng, shape, disc, 38 * s, 0.1), 4 * s)
        rgb = background * (light * (1 - depth))[..., None] + 0.45 * disc_glow[..., None] * [1, 1, 0.6]
        rgb = np.where(fov[..., None], rgb, 0.03)
        images.append(finish_image(np.clip(rgb, 0, 1), rng, blur=0.9, noise=0.02))
        drawn = distance < vessel_width * rng.uniform(0.45, 0.65) + 0.3  # the annotator's idea of the width
        drawn &= ~((vessel_width < 1.8) & (smooth_noise(rng, shape, 15) > 1))  # some faint vessels missed
        mask = hand_drawn(drawn.astype(np.uint8), rng, 0.7, 4)
        masks.append(np.where(fov, mask, IGNORE).astype(np.uint8))
    return images, masks, np.arange(n)


# ---------------------------------------------------------------- planted misplacements


def plant_misplacements(masks, sequence, rng, count: int):
    """count misplacements planted at random labelled pairs (a third each): shifts of 3-8 px, left-right flips,
    swaps between distant examples (different sequences, or far apart in one); returns (masks, {index: defect})."""
    masks = list(masks)
    n = len(masks)
    free = [int(i) for i in rng.permutation(n) if ((masks[i] != 0) & (masks[i] != IGNORE)).any()]
    defects = {}
    for k in range(count):
        if not free:
            break
        i = int(free.pop())
        kind = ("shift", "flip_lr", "swap")[k % 3]
        if kind == "shift":
            size = int(rng.integers(3, 9))
            dy, dx = [size, int(rng.integers(-size, size + 1))][:: 1 if rng.random() < 0.5 else -1]
            dy, dx = dy * rng.choice([-1, 1]), dx * rng.choice([-1, 1])
            masks[i] = moved(masks[i], int(dy), int(dx), 0) if rng.random() < 0.5 else np.roll(masks[i], (dy, dx), (0, 1))
            defects[i] = f"shift({dy},{dx})"
        elif kind == "flip_lr":
            masks[i] = masks[i][:, ::-1]
            defects[i] = "flip_lr"
        else:
            far = [int(j) for j in free if sequence[j] != sequence[i] or abs(int(j) - i) > n // 4]
            far = [j for j in far if masks[j].shape == masks[i].shape]
            if not far:
                continue
            j = far[int(rng.integers(len(far)))]
            free.remove(j)
            masks[i], masks[j] = masks[j], masks[i]
            defects[i], defects[j] = f"swap:{j}", f"swap:{i}"
    return masks, defects
