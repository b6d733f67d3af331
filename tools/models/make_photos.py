#!/usr/bin/python3
"""Builds the photo-32 data set (models/photo-32.md) from Debian's wallpaper packages.

    /usr/bin/python3 tools/models/make_photos.py [OUTDIR]      (default runs/photo-32/data)
    /usr/bin/python3 tools/models/make_photos.py --set v2 [--contact PNG] [OUTDIR]
                                                      (default runs/photo-v2/data)
    /usr/bin/python3 tools/models/make_photos.py --examples models/examples/photos
                      the pipelines' example inputs: 8 held-out v2 photographs in the
                      public domain or under CC0, centred squares at 128 px, sources.md

Needs the Debian packages mate-backgrounds, plasma-workspace-wallpapers, python3-pil and
python3-numpy (`scripts/setup.sh train` installs them); --set v2 also lomiri-wallpapers-16.04,
lomiri-wallpapers-20.04, palapeli-data, gcompris-qt-data, python3-skimage, python3-sklearn,
python-matplotlib-data and python3-scipy (the "v2" docstring below).

--set v1 (the default) is photo-32's data set and is produced exactly as before; everything
from here to "v2" describes it.

Photographs only. The 21 files of PHOTOS were chosen by looking at every image of
gnome-backgrounds 43.1-1, mate-backgrounds 1.26.0-1, plasma-workspace-wallpapers
4:5.27.5-2 and ukui-wallpapers 20.04.3-1.1 (Debian 12): gnome-backgrounds and
ukui-wallpapers hold only renders and illustrations, mate-backgrounds' abstract/ and
desktop/ folders too (Elephants.jpg is a painting), and of the photographs of
plasma-workspace-wallpapers two are monochrome (Grey, ColdRipple: R = G = B, no colour
to learn) and left out; its renders (Altai, Canopee, Flow, Honeywave, Volna, ...) and
paintings (Autumn, SafeLanding) too.

Split by source photograph: PHOTOS sorted by "package/name"; every fourth (positions 3,
7, 11, ...) is held out (5 of 21), the others are for training (16).

Training crops: each photo is first reduced so its short side is 512 px (Lanczos). Then
CROPS square crops, side s = exp(U(log 0.15, log 1)) times the short side (several
scales, from a 77-px detail to the full height), position uniform, each resized to 32x32
(Lanczos, Pillow's reducing_gap for an area-like prefilter). The random numbers come from
numpy's default_rng(crc32 of the photo's name), so each photo's crops do not depend on
the list. Horizontal flips are left to the trainer (`random_flip`, on by default).
Written as float32 [N,3,32,32] in [0,1], the layout `scoresde train --data X.npy` reads:
  train.npy         the training crops (16 photos x CROPS)
  heldout.npy       the same kind of crops of the 5 held-out photos (HELD_CROPS each)
  heldout256.npy    uint8 [M,256,256,3]: evaluation images of the held-out photos at
                    256x256: the centred full-height square and 3 random squares of
                    0.4..0.8 of the short side per photo (M = 20)
  photos.tsv        split, package, file, licence, author, size, crops

v2 (--set v2): the 21 photographs of v1 (PHOTOS) and 132 more (PHOTOS_V2_NEW), 153 in all,
from Debian 12 packages whose every image was looked at (gnome-backgrounds,
ukui-wallpapers, sway-backgrounds, xfdesktop4-data, lomiri-wallpapers (the base package)
and debian-edu-artwork-* hold only renders and drawings; below, what was used and what was
left out, with why):
  lomiri-wallpapers-16.04 20.04.0-2   13 photographs (umang is a render, analogpattern a
                                      texture lit by coloured lamps, left out)
  lomiri-wallpapers-20.04 20.04.0-2   Kleiber (Fossa, Infinite-Sea, Painting-Colors: renders)
  palapeli-data 4:22.12.3-1           the 5 puzzle photographs (its backgrounds/ are textures)
  gcompris-qt-data 3.1-2              105 photographs of 4 activities, read from their Qt
                                      resource files (/usr/share/gcompris-qt/rcc/*.rcc):
                                      explore_monuments (48; castleClinton is monochrome, left
                                      out), explore_world_animals (15), explore_farm_animals
                                      (9), erase (33); authors and licences from each
                                      activity's resource README (upstream's README names
                                      aulaPalatina "audaPalatina"). Not used: lang (drawings),
                                      paintings and details (paintings), photo_hunter and
                                      clickgame (drawings), categorization (photos, but
                                      131 of 142 under 256 px)
  python3-skimage 0.19.3-8            astronaut, chelsea, coffee, rocket (stereo_motorcycle
                                      has no licence statement; retina, hubble_deep_field,
                                      ihc are medical/astronomical/microscopy; the rest gray
                                      or synthetic)
  python3-sklearn 1.2.1+dfsg-1        china, flower
  python-matplotlib-data 3.6.3-1      grace_hopper
  python3-scipy 1.10.1-2              face (scipy.misc's raccoon, bz2 raw 1024x768 RGB;
                                      ascent is gray)
All are >= 300 px on the short side. The recipe is v1's: the same load(), crops() and
per-photo seed (crc32 of the name: v1's names for the 21, "activity/file" for gcompris,
the file's stem for the rest), CROPS_V2 crops per training photo, HELD_CROPS_V2 per held-out
photo. Split by source photograph: the 5 held-out photos of v1 stay held out and v1's 16
training photos stay training photos; the 132 new ones, sorted by "package/name", have every
fourth (positions 3, 7, ...) held out: 115 training photos x CROPS_V2 = 28,750 crops,
38 held out (5 + 33) x HELD_CROPS_V2 = 7,600 crops and 152 256-px images; the first
1,000 crops and 20 256-px images are exactly v1's (same seeds, same number of draws).
Photos with a short side under 512 px (chelsea, coffee, rocket, china, flower, cabrillo,
victoriaMemorial, crocodile: 300-506 px) are upsampled to 512 by load() as in v1, so the
256-px squares of the held-out chelsea (300 px) and flower (427 px) are softer than the
others. photos.tsv has split, package, version (dpkg-query's, with a warning when it is
not the one of PKG_VERSIONS), file, licence, author, size, crops. --contact PNG writes a
contact sheet of the set's photographs (thumbnails, names, held-out ones marked).
"""
import bz2
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

SIZE = 32
CROPS = 1200
HELD_CROPS = 200
PREP = 512
EVAL = 256

MATE = "/usr/share/backgrounds/mate/nature/"
PLASMA = "/usr/share/wallpapers/%s/contents/images/2560x1600.jpg"
MATE_LIC = "GPL-2+ (debian/copyright)"
PLASMA_LIC = "GPL-2+ (debian/copyright, Files: *); LGPLv3 (metadata.json)"
# (package, file, author as in debian/copyright or metadata.json)
PHOTOS = [
    ("mate-backgrounds", MATE + "Aqua.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "Blinds.jpg", "Lennart Poettering, Andrea Cimitan"),
    ("mate-backgrounds", MATE + "Dune.jpg", "Marco Cogoni, Hylke Bons"),
    ("mate-backgrounds", MATE + "FreshFlower.jpg", "Jens Ansorg"),
    ("mate-backgrounds", MATE + "Garden.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei"),
    ("mate-backgrounds", MATE + "LadyBird.jpg", "Charles Barbin"),
    ("mate-backgrounds", MATE + "RainDrops.jpg", "\"blackcombwhistler07\""),
    ("mate-backgrounds", MATE + "Storm.jpg", "Sergey Nazarov"),
    ("mate-backgrounds", MATE + "TwoWings.jpg", "Charles Barbin, Hylke Bons"),
    ("mate-backgrounds", MATE + "Wood.jpg", "Jean-Francois Fortin Tam"),
    ("mate-backgrounds", MATE + "YellowFlower.jpg", "Charles Barbin"),
    ("plasma-workspace-wallpapers", PLASMA % "BytheWater", "Maciej Wiklo"),
    ("plasma-workspace-wallpapers", PLASMA % "ColorfulCups", "Dmitri Popov"),
    ("plasma-workspace-wallpapers", PLASMA % "DarkestHour", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "EveningGlow", "Ian Hex"),
    ("plasma-workspace-wallpapers", PLASMA % "FallenLeaf", "Martin Klapetek"),
    ("plasma-workspace-wallpapers", PLASMA % "Kite", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "OneStandsOut", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "Path", "Risto Saukonpaa"),
    ("plasma-workspace-wallpapers", PLASMA % "summer_1am", "Risto Saukonpaa"),
]


# ---- v2 -------------------------------------------------------------------------------
CROPS_V2 = 250
HELD_CROPS_V2 = 200      # = HELD_CROPS: the 5 v1 held-out photos get v1's crops and 256-px squares
PKG_VERSIONS = {
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "palapeli-data": "4:22.12.3-1",
    "gcompris-qt-data": "3.1-2",
    "python3-skimage": "0.19.3-8",
    "python3-sklearn": "1.2.1+dfsg-1",
    "python-matplotlib-data": "3.6.3-1",
    "python3-scipy": "1.10.1-2",
}
BG = "/usr/share/backgrounds/"
LOMIRI_COPY = " (debian/copyright)"
PALA = "/usr/share/palapeli/collection/"
PALA_LIC = "GPL-2+ (debian/copyright, Files: *); %s (the puzzle's .desktop)"
SKI = "/usr/lib/python3/dist-packages/skimage/data/"
SKI_LIC = "BSD-3-Clause (debian/copyright, Files: *); %s (skimage.data docstring)"
SKL = "/usr/lib/python3/dist-packages/sklearn/datasets/images/"
SKL_LIC = "BSD-3-Clause (debian/copyright, Files: *); CC-BY-2.0 (images/README.txt)"
GC_RCC = "/usr/share/gcompris-qt/rcc/%s.rcc"
GC_LIC = "GPL-3+ (debian/copyright, Files: *); %s (the activity's resource/README)"


def G(activity, rel, lic, author):
    """A gcompris-qt-data photograph inside the activity's Qt resource file."""
    return ("gcompris-qt-data", "%s:/gcompris/src/activities/%s/%s" % (GC_RCC % activity,
                                                                       activity, rel),
            GC_LIC % lic, author, "%s/%s" % (activity, os.path.splitext(os.path.basename(rel))[0]))


# (package, file, licence, author, name); name: the seed and the sort key's second half
PHOTOS_V2_NEW = [
    ("lomiri-wallpapers-16.04", BG + "Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0" + LOMIRI_COPY, "Sander Klootwijk", None),
    ("lomiri-wallpapers-16.04", BG + "Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0" + LOMIRI_COPY, "\"Bolly\"", None),
    ("lomiri-wallpapers-16.04", BG + "Picture_0B_by_freespace.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Trevor \"Freespace\"", None),
    ("lomiri-wallpapers-16.04", BG + "Picture_1A_by_freespace.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Trevor \"Freespace\"", None),
    ("lomiri-wallpapers-16.04", BG + "Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Jakub Mede", None),
    ("lomiri-wallpapers-16.04", BG + "aitzgorri_by_Aitzol_Berasategi.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Aitzol Berasategi", None),
    ("lomiri-wallpapers-16.04", BG + "free_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0" + LOMIRI_COPY, "Peter Nerlich", None),
    ("lomiri-wallpapers-16.04", BG + "friends_by_Aitzol_Berasategi.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Aitzol Berasategi", None),
    ("lomiri-wallpapers-16.04", BG + "greentock_by_Peter_Nerlich.jpg", "CC-BY-SA-4.0" + LOMIRI_COPY, "Peter Nerlich", None),
    ("lomiri-wallpapers-16.04", BG + "life_by_Aitzol_Berasategi.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Aitzol Berasategi", None),
    ("lomiri-wallpapers-16.04", BG + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Aitzol Berasategi", None),
    ("lomiri-wallpapers-16.04", BG + "seeding_by_Clements_Engelhardt.jpg", "CC0-1.0" + LOMIRI_COPY, "Clemens Engelhardt", None),
    ("lomiri-wallpapers-16.04", BG + "sunset_by_Aitzol_Berasategi.jpg", "CC-BY-4.0" + LOMIRI_COPY, "Aitzol Berasategi", None),
    ("lomiri-wallpapers-20.04", BG + "Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0" + LOMIRI_COPY, "Lukas Baubkus", None),
    ("palapeli-data", PALA + "castle-maintenon.jpg", PALA_LIC % "FDL", "Eric Pouhier", None),
    ("palapeli-data", PALA + "cincinnati-bridge.jpg", PALA_LIC % "Public Domain", "Derek Jensen", None),
    ("palapeli-data", PALA + "citrus-fruits.jpg", PALA_LIC % "Public Domain", "US Department of Agriculture", None),
    ("palapeli-data", PALA + "european-honey-bee.jpg", PALA_LIC % "Public Domain", "John Severns", None),
    ("palapeli-data", PALA + "panther-chameleon-female.jpg", PALA_LIC % "GNU-FDL", "B. Navez and others", None),
    ("python3-skimage", SKI + "astronaut.png", SKI_LIC % "public domain (NASA)", "NASA", None),
    ("python3-skimage", SKI + "chelsea.png", SKI_LIC % "CC0", "Stefan van der Walt", None),
    ("python3-skimage", SKI + "coffee.png", SKI_LIC % "CC0", "Rachel Michetti", None),
    ("python3-skimage", SKI + "rocket.jpg", SKI_LIC % "public domain (SpaceX)", "SpaceX", None),
    ("python3-sklearn", SKL + "china.jpg", SKL_LIC, "danielbuechele (Flickr)", None),
    ("python3-sklearn", SKL + "flower.jpg", SKL_LIC, "vultilion (Flickr)", None),
    ("python-matplotlib-data", "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
     "matplotlib licence (debian/copyright, Files: *); the package states no source for the "
     "photo (U.S. Navy portrait, public domain)", "U.S. Navy", None),
    ("python3-scipy", "/usr/lib/python3/dist-packages/scipy/misc/face.dat",
     "BSD-3-clause (debian/copyright, Files: *); public domain (scipy.misc.face docstring: "
     "raccoon-procyon-lotor.jpg of public-domain-image.com)", "public-domain-image.com", None),
    G('explore_farm_animals', 'resource/animals/cat.webp', 'public domain', 'Loliloli'),
    G('explore_farm_animals', 'resource/animals/chicken.webp', 'public domain', 'Tranquilles'),
    G('explore_farm_animals', 'resource/animals/cow.webp', 'public domain', 'Dohduhdah'),
    G('explore_farm_animals', 'resource/animals/dog.webp', 'public domain', 'Hans Kemperman'),
    G('explore_farm_animals', 'resource/animals/duck.webp', 'CC0-1.0', 'Bernard Spragg'),
    G('explore_farm_animals', 'resource/animals/horse.webp', 'CC0-1.0', 'Seth Zeigler'),
    G('explore_farm_animals', 'resource/animals/owl.webp', 'CC0-1.0', 'Lepale'),
    G('explore_farm_animals', 'resource/animals/pig.webp', 'public domain', 'Teinesavaii'),
    G('explore_farm_animals', 'resource/animals/sheep.webp', 'CC0-1.0', 'Rob Mitchell'),
    G('explore_monuments', 'resource/egypt/bentPyramid.webp', 'public domain', 'Neithsabes'),
    G('explore_monuments', 'resource/egypt/greatPyramidOfGiza.webp', 'CC0-1.0', 'Gary Todd'),
    G('explore_monuments', 'resource/egypt/meidumPyramid.webp', 'public domain', 'Neithsabes'),
    G('explore_monuments', 'resource/egypt/redPyramid.webp', 'public domain', 'Chipdawes'),
    G('explore_monuments', 'resource/france/arlesAmphitheater.webp', 'public domain', '(WT-fr) OT Arles'),
    G('explore_monuments', 'resource/france/chateaudeChambord.webp', 'public domain', 'BjörnT'),
    G('explore_monuments', 'resource/france/chateaudeChenonceau.webp', 'public domain', 'Alf van Beem'),
    G('explore_monuments', 'resource/france/citedeCarcassonne.webp', 'public domain', 'Petitemontagnedujura'),
    G('explore_monuments', 'resource/france/eiffelTower.webp', 'public domain', 'Tognopop'),
    G('explore_monuments', 'resource/france/montStMichel.webp', 'CC0-1.0', 'Ali Sabbagh'),
    G('explore_monuments', 'resource/france/palaisdesPapes.webp', 'CC0-1.0', 'Tognopop'),
    G('explore_monuments', 'resource/france/pontduGard.webp', 'public domain', 'Mimova'),
    G('explore_monuments', 'resource/france/reimsCathedral.webp', 'public domain', 'Mattana'),
    G('explore_monuments', 'resource/france/rocamadour.webp', 'public domain', 'François Darras'),
    G('explore_monuments', 'resource/germany/aulaPalatina.webp', 'public domain', 'Berthold Werner'),
    G('explore_monuments', 'resource/germany/berlinCathedral.webp', 'CC0-1.0', 'Gary Todd'),
    G('explore_monuments', 'resource/germany/brandenburgGate.webp', 'public domain', 'Evans1551'),
    G('explore_monuments', 'resource/germany/neuschwansteinCastle.webp', 'CC0-1.0', 'cameralends'),
    G('explore_monuments', 'resource/germany/schwerinPalace.webp', 'CC0-1.0', 'Hermann Luyken'),
    G('explore_monuments', 'resource/germany/trierImperialBaths.webp', 'public domain', 'Berthold Werner'),
    G('explore_monuments', 'resource/germany/wormsCathedral.webp', 'public domain', 'Immanuel Giel'),
    G('explore_monuments', 'resource/india/ajantaCave.webp', 'public domain', 'Jonathanawhite'),
    G('explore_monuments', 'resource/india/charminar.webp', 'public domain', 'Goutamkhandelwal'),
    G('explore_monuments', 'resource/india/gatewayofIndia.webp', 'CC0-1.0', 'Simon Steinberger'),
    G('explore_monuments', 'resource/india/goldenTemple.webp', 'CC0-1.0', 'Jasdeep Singh'),
    G('explore_monuments', 'resource/india/greatStupa.webp', 'public domain', 'ArnoldBetten'),
    G('explore_monuments', 'resource/india/hawaMahal.webp', 'public domain', 'Janwiki'),
    G('explore_monuments', 'resource/india/konarkSunTemple.webp', 'public domain', 'Tetraktys'),
    G('explore_monuments', 'resource/india/mysorePalace.webp', 'public domain', 'Shiva sg'),
    G('explore_monuments', 'resource/india/qutubMinar.webp', 'CC0-1.0', 'pramadas'),
    G('explore_monuments', 'resource/india/rangGhar.webp', 'public domain', 'Porikolpok Oxom'),
    G('explore_monuments', 'resource/india/victoriaMemorial.webp', 'CC0-1.0', 'Anourag'),
    G('explore_monuments', 'resource/usa/cabrillo.webp', 'CC0-1.0', 'allyndon'),
    G('explore_monuments', 'resource/usa/canyondeChelly.webp', 'public domain', 'Nikater'),
    G('explore_monuments', 'resource/usa/castillodeSanMarcos.webp', 'public domain', 'National Park Service'),
    G('explore_monuments', 'resource/usa/fortSumter.webp', 'CC0-1.0', 'Gary Todd'),
    G('explore_monuments', 'resource/usa/georgeWashingtonBirthplace.webp', 'public domain', 'National Park Service'),
    G('explore_monuments', 'resource/usa/lincolnMemorial.webp', 'CC0-1.0', 'Brylie Christopher Oxley'),
    G('explore_monuments', 'resource/usa/mountRushmore.webp', 'CC0-1.0', 'Eekim'),
    G('explore_monuments', 'resource/usa/navajo.webp', 'public domain', 'Jon Sullivan'),
    G('explore_monuments', 'resource/usa/statueofLiberty.webp', 'public domain', '(WT-shared) Ypsilonatshared'),
    G('explore_monuments', 'resource/wonders/chichenItza.webp', 'CC-BY-SA-4.0', 'Daniel Schwen'),
    G('explore_monuments', 'resource/wonders/christTheRedeemer.webp', 'CC-BY-SA-4.0', 'Chensiyuan'),
    G('explore_monuments', 'resource/wonders/colosseum.webp', 'public domain', 'Urse Ovidiu'),
    G('explore_monuments', 'resource/wonders/greatWallofChina.webp', 'CC0-1.0', 'Nicolas Perrault III'),
    G('explore_monuments', 'resource/wonders/machuPicchu.webp', 'CC0-1.0', 'Guillaume Pascal'),
    G('explore_monuments', 'resource/wonders/petra.webp', 'public domain', 'Berthold Werner'),
    G('explore_monuments', 'resource/wonders/tajMahal.webp', 'CC-BY-SA-4.0', 'Yann'),
    G('explore_world_animals', 'resource/animals/bison.webp', 'CC0-1.0', 'Kurt Kaiser'),
    G('explore_world_animals', 'resource/animals/chameleon.webp', 'public domain', 'Nilesh1104'),
    G('explore_world_animals', 'resource/animals/crocodile.webp', 'public domain', 'Djambalawa'),
    G('explore_world_animals', 'resource/animals/dragon.webp', 'public domain', 'TimVickers'),
    G('explore_world_animals', 'resource/animals/giraffe.webp', 'CC0-1.0', 'Mike and Lara Wolfe'),
    G('explore_world_animals', 'resource/animals/hedgehog.webp', 'public domain', 'George Chernilevsky'),
    G('explore_world_animals', 'resource/animals/jaguar.webp', 'CC0-1.0', 'Frieda Bredesen'),
    G('explore_world_animals', 'resource/animals/kangaroo.webp', 'public domain', 'Vicki Nunn'),
    G('explore_world_animals', 'resource/animals/koala.webp', 'public domain', 'BurningWell'),
    G('explore_world_animals', 'resource/animals/lemur.webp', 'CC0-1.0', 'Mathias Appel'),
    G('explore_world_animals', 'resource/animals/moose.webp', 'public domain', 'Ryan Hagerty'),
    G('explore_world_animals', 'resource/animals/narwhal.webp', 'public domain', 'Dr Kristin Laidre'),
    G('explore_world_animals', 'resource/animals/panda.webp', 'public domain', 'Jeff Kubina'),
    G('explore_world_animals', 'resource/animals/polar_bear.webp', 'public domain', 'anonymous'),
    G('explore_world_animals', 'resource/animals/scarlet_macaw.webp', 'CC0-1.0', 'Dcoetzee'),
    G('erase', 'resource/alpaca.webp', 'CC-BY-SA-4.0', 'Dietmar Rabich'),
    G('erase', 'resource/bee.webp', 'CC-BY-2.0', 'aussiegall'),
    G('erase', 'resource/butterfly.webp', 'CC-BY-SA-4.0', 'Jee & Rani Nature Photography'),
    G('erase', 'resource/calf.webp', 'CC-BY-SA-4.0', 'Basile Morin'),
    G('erase', 'resource/camels.webp', 'CC-BY-SA-4.0', 'Alexandr frolov'),
    G('erase', 'resource/caterpillar.webp', 'CC-BY-SA-4.0', 'Ivar Leidus'),
    G('erase', 'resource/chamaeleon.webp', 'CC-BY-3.0', 'Benny Trapp'),
    G('erase', 'resource/cheetah.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/crab.webp', 'CC0-1.0', 'Nosferattus'),
    G('erase', 'resource/dolphin.webp', 'CC-BY-SA-4.0', 'טל שמע'),
    G('erase', 'resource/flying_fox.webp', 'CC-BY-SA-4.0', 'Andrew Mercer'),
    G('erase', 'resource/gibbon.webp', 'CC-BY-3.0', 'JJ Harrison'),
    G('erase', 'resource/giraffe.webp', 'public domain', 'Sergio Cambelo'),
    G('erase', 'resource/goat.webp', 'CC-BY-SA-4.0', 'JoachimKohlerBremen'),
    G('erase', 'resource/gorilla.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/gosling.webp', 'CC-BY-SA-4.0', 'Stephan Sprinz'),
    G('erase', 'resource/heron.webp', 'CC-BY-SA-4.0', 'Stephan Sprinz'),
    G('erase', 'resource/horse.webp', 'CC-BY-SA-4.0', 'Eatcha'),
    G('erase', 'resource/kingfisher.webp', 'CC0-1.0', 'Frank-2.0'),
    G('erase', 'resource/kitten.webp', 'CC-BY-2.0', 'GalgenTX'),
    G('erase', 'resource/long_nosed_monkey.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/macaque.webp', 'CC-BY-SA-4.0', 'PJeganathan'),
    G('erase', 'resource/meerkats.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/northern_harrier.webp', 'CC-BY-SA-4.0', 'Frank Schulenburg'),
    G('erase', 'resource/nubian_ibex.webp', 'CC-BY-SA-4.0', 'Rhododendrites'),
    G('erase', 'resource/penguin.webp', 'CC-BY-SA-4.0', 'Gordon Leggett'),
    G('erase', 'resource/pika.webp', 'public domain', 'NPS Climate Change Response'),
    G('erase', 'resource/red_panda.webp', 'CC0-1.0', 'Mathias Appel'),
    G('erase', 'resource/rhinoceros.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/spoonbills.webp', 'CC-BY-SA-4.0', 'Ryzhkov Sergey'),
    G('erase', 'resource/squirrel.webp', 'CC-BY-SA-4.0', 'Роман Наумов'),
    G('erase', 'resource/swans.webp', 'CC-BY-SA-4.0', 'Charles J. Sharp'),
    G('erase', 'resource/toucan.webp', 'CC-BY-SA-4.0', 'LG Nyqvist'),
]


def rcc_file(rcc, member):
    """The bytes of `member` (a path like /gcompris/...) in a Qt resource file (rcc v1-3)."""
    with open(rcc, "rb") as f:
        b = f.read()
    if b[:4] != b"qres":
        raise ValueError("%s: not a Qt resource file" % rcc)
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    ns = 14 if ver == 1 else 22

    def name(off):
        n, = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    node = 0
    for part in member.strip("/").split("/"):
        p = tree + node * ns
        flags, = struct.unpack(">H", b[p + 4:p + 6])
        if not flags & 2:
            raise KeyError(member)
        cnt, first = struct.unpack(">II", b[p + 6:p + 14])
        for j in range(first, first + cnt):
            if name(struct.unpack(">I", b[tree + j * ns:tree + j * ns + 4])[0]) == part:
                node = j
                break
        else:
            raise KeyError("%s: no %s" % (rcc, member))
    p = tree + node * ns
    flags, = struct.unpack(">H", b[p + 4:p + 6])
    off, = struct.unpack(">I", b[p + 10:p + 14])
    size, = struct.unpack(">I", b[data + off:data + off + 4])
    raw = b[data + off + 4:data + off + 4 + size]
    if flags & 1:
        raw = zlib.decompress(raw[4:])          # qCompress: 4-byte length, then zlib
    elif flags & 4:
        raise ValueError("%s: zstd-compressed member %s" % (rcc, member))
    return raw


def open_image(path):
    """A PIL image of a PHOTOS_V2 file: a plain image, rcc:member, or scipy's face.dat."""
    if ".rcc:" in path:
        rcc, member = path.split(".rcc:", 1)
        return Image.open(io.BytesIO(rcc_file(rcc + ".rcc", member)))
    if path.endswith("/face.dat"):
        with open(path, "rb") as f:
            a = np.frombuffer(bz2.decompress(f.read()), dtype=np.uint8)
        return Image.fromarray(a.reshape(768, 1024, 3))
    return Image.open(path)


def pkg_version(pkg):
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True).stdout.strip()
    except OSError:
        v = ""
    if v != PKG_VERSIONS.get(pkg):
        print("warning: %s is %s, the data set was made with %s" %
              (pkg, v or "not installed", PKG_VERSIONS.get(pkg)), file=sys.stderr)
    return v


def split_v2():
    """[(held_out, package, path, licence, author, name)]: v1's 21 with v1's split, then the
    new ones sorted by package/name with every fourth held out."""
    old = [(h, pkg, path, MATE_LIC if pkg == "mate-backgrounds" else PLASMA_LIC, author,
            name_of(path)) for h, pkg, path, author in split()]
    new = [(pkg, path, lic, author,
            name or os.path.splitext(os.path.basename(path))[0])
           for pkg, path, lic, author, name in PHOTOS_V2_NEW]
    new.sort(key=lambda r: "%s/%s" % (r[0], r[4]))
    rows = old + [(i % 4 == 3,) + r for i, r in enumerate(new)]
    keys = ["%s/%s" % (r[1], r[5]) for r in rows]
    assert len(set(keys)) == len(keys), "duplicate names"
    return rows


def contact_sheet(rows, out, thumb=160, cols=10):
    """rows: [(held_out, package, name, PIL image)]"""
    from PIL import ImageDraw
    lab = 24
    n = len(rows)
    sheet = Image.new("RGB", (cols * thumb, ((n + cols - 1) // cols) * (thumb + lab)), "white")
    d = ImageDraw.Draw(sheet)
    for i, (h, pkg, name, im) in enumerate(rows):
        t = im.copy()
        t.thumbnail((thumb - 4, thumb - 4), Image.LANCZOS)
        x, y = (i % cols) * thumb, (i // cols) * (thumb + lab)
        sheet.paste(t, (x + 2 + (thumb - 4 - t.size[0]) // 2, y + 2 + (thumb - 4 - t.size[1]) // 2))
        if h:
            d.rectangle((x, y, x + thumb - 1, y + thumb - 1), outline=(220, 0, 0), width=2)
        d.text((x + 2, y + thumb), name.split("/")[-1][:26], fill=(200, 0, 0) if h else "black")
        d.text((x + 2, y + thumb + 11), pkg[:26], fill=(90, 90, 90))
    sheet.save(out)


def main_v2(out, contact):
    os.makedirs(out, exist_ok=True)
    versions = {}
    train, held, held256, rows, sheet = [], [], [], [], []
    for h, pkg, path, lic, author, name in split_v2():
        if pkg not in versions:
            versions[pkg] = pkg_version(pkg)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        full = open_image(path)
        full.load()
        im = load(full)
        n = HELD_CROPS_V2 if h else CROPS_V2
        c = crops(im, n, rng)
        (held if h else train).extend(c)
        if h:
            held256.extend(eval_squares(load(full, 2 * EVAL), rng))
        rows.append(("heldout" if h else "train", pkg, versions[pkg], path, lic, author,
                     "%dx%d" % full.size, n))
        if contact:
            t = full.convert("RGB")
            t.thumbnail((320, 320), Image.LANCZOS)
            sheet.append((h, pkg, name, t))
        print("%-8s %-26s %-40s %dx%d" % (rows[-1][0], pkg, name, *full.size), flush=True)
    write(out, train, held, held256)
    with open(os.path.join(out, "photos.tsv"), "w") as f:
        f.write("split\tpackage\tversion\tfile\tlicence\tauthor\tsize\tcrops\n")
        for r in rows:
            f.write("\t".join(str(v) for v in r) + "\n")
    if contact:
        contact_sheet(sheet, contact)
    print("v2: train %d crops of %d photos, held-out %d crops + %d 256-px images of %d photos"
          " -> %s" % (len(train), sum(r[0] == "train" for r in rows), len(held), len(held256),
                      sum(r[0] == "heldout" for r in rows), out))


def examples(out, n=8, size=128):
    """The pipelines' example inputs (models/examples/photos/): the centred square of the
    first n held-out v2 photographs in the public domain or under CC0, at size x size,
    and a README.md table of their sources."""
    os.makedirs(out, exist_ok=True)
    rows = [r for r in split_v2() if r[0] and ("cc0" in r[3].lower() or
                                                "public domain" in r[3].lower())][:n]
    lines = ["| file | package | source | licence | author |", "|---|---|---|---|---|"]
    for i, (_, pkg, path, lic, author, name) in enumerate(rows):
        full = open_image(path).convert("RGB")
        w, h = full.size
        m = min(w, h)
        sq = full.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
        sq.resize((size, size), Image.LANCZOS, reducing_gap=3.0).save(
            os.path.join(out, "photo_%02d.png" % i), optimize=True)
        lines.append("| photo_%02d.png | `%s` %s | `%s` | %s | %s |" % (
            i, pkg, pkg_version(pkg), path, lic, author))
    with open(os.path.join(out, "sources.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%d example photos -> %s" % (len(rows), out))


def name_of(path):
    return path.split("/")[4] if path.startswith("/usr/share/wallpapers/") else \
        os.path.splitext(os.path.basename(path))[0]


def key_of(pkg, path):
    return "%s/%s" % (pkg, name_of(path))


def split():
    """[(held_out, package, path, author)] in the sorted order."""
    rows = sorted(PHOTOS, key=lambda r: key_of(r[0], r[1]))
    return [(i % 4 == 3,) + r for i, r in enumerate(rows)]


def load(path, short=PREP):
    im = path if isinstance(path, Image.Image) else Image.open(path)
    im = im.convert("RGB")
    w, h = im.size
    k = short / min(w, h)
    return im.resize((round(w * k), round(h * k)), Image.LANCZOS, reducing_gap=3.0)


def crops(im, n, rng, lo=0.15, hi=1.0, size=SIZE):
    w, h = im.size
    m = min(w, h)
    out = []
    for _ in range(n):
        s = int(round(m * np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        s = max(size, min(s, m))
        x0 = int(rng.integers(0, w - s + 1))
        y0 = int(rng.integers(0, h - s + 1))
        c = im.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.LANCZOS,
                                                     reducing_gap=3.0)
        out.append(np.asarray(c, dtype=np.uint8))
    return out


def eval_squares(im, rng):
    """The EVAL-px evaluation images of one held-out photo (short side 2 * EVAL): the
    centred full-height square and 3 random squares of 0.4-0.8 of the short side."""
    w, h = im.size
    m = min(w, h)
    sq = [im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
          .resize((EVAL, EVAL), Image.LANCZOS, reducing_gap=3.0)]
    sq += [Image.fromarray(a) for a in crops(im, 3, rng, 0.4, 0.8, EVAL)]
    return [np.asarray(s, dtype=np.uint8) for s in sq]


def write(out, train, held, held256):
    f32 = lambda l: np.ascontiguousarray(np.stack(l).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    np.save(os.path.join(out, "train.npy"), f32(train))
    np.save(os.path.join(out, "heldout.npy"), f32(held))
    np.save(os.path.join(out, "heldout256.npy"), np.ascontiguousarray(np.stack(held256)))


def main():
    args = sys.argv[1:]
    dataset, contact, pos = "v1", None, []
    while args:
        a = args.pop(0)
        if a == "--set" and args:
            dataset = args.pop(0)
        elif a.startswith("--set="):
            dataset = a[6:]
        elif a == "--contact" and args:
            contact = args.pop(0)
        elif a.startswith("--contact="):
            contact = a[10:]
        elif a == "--examples" and args:
            return examples(args.pop(0))
        elif a.startswith("-"):
            sys.exit(__doc__)
        else:
            pos.append(a)
    if dataset not in ("v1", "v2") or len(pos) > 1:
        sys.exit(__doc__)
    if dataset == "v2":
        return main_v2(pos[0] if pos else "runs/photo-v2/data", contact)
    out = pos[0] if pos else "runs/photo-32/data"
    os.makedirs(out, exist_ok=True)
    train, held, held256, rows = [], [], [], []
    for h, pkg, path, author in split():
        name = name_of(path)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        full = Image.open(path)
        im = load(path)
        n = HELD_CROPS if h else CROPS
        c = crops(im, n, rng)
        (held if h else train).extend(c)
        if h:
            held256.extend(eval_squares(load(path, 2 * EVAL), rng))   # short side 512
        rows.append(("heldout" if h else "train", pkg, path,
                     MATE_LIC if pkg == "mate-backgrounds" else PLASMA_LIC, author,
                     "%dx%d" % full.size, n))
        print("%-8s %-28s %-22s %dx%d" % (rows[-1][0], pkg, name, *full.size), flush=True)
    write(out, train, held, held256)
    with open(os.path.join(out, "photos.tsv"), "w") as f:
        f.write("split\tpackage\tfile\tlicence\tauthor\tsize\tcrops\n")
        for r in rows:
            f.write("\t".join(str(v) for v in r) + "\n")
    print("train %d crops of %d photos, held-out %d crops + %d 256-px images of %d photos -> %s"
          % (len(train), sum(r[0] == "train" for r in rows), len(held), len(held256),
             sum(r[0] == "heldout" for r in rows), out))


if __name__ == "__main__":
    main()
