"""Deterministic synthetic department data for a member of the federation.

``write_sample`` writes the files a city's source departments would deliver: one
file per data theme of the catalog, named ``<theme>.csv`` or ``<theme>.jsonl``,
in the importer's format (see :mod:`node.importer`):

* every row starts with the subject block ``subject_id``, ``subject_type``,
  ``subject_name``, ``record_key`` and goes on with the theme's catalog fields;
* CSV has a header row; JSON Lines has one object a line; an empty optional value
  is an empty cell in CSV and a missing key in JSON Lines;
* dates are ``YYYY-MM-DD``, decimals ``12.50``, codes are catalog codes, unified
  social credit codes and resident identity numbers carry valid check characters.

Promises kept here:

* **Deterministic.** The output depends only on (member or region, subjects,
  seed, today): the same call writes byte-identical files. Nothing reads the
  clock or the global random generator; dates count back from ``today``
  (2026-11-01 unless given).
* **Consistent across members.** A city's subjects are a stream keyed by its
  region code and the seed, independent of how many are asked for; customs
  (member ``customs``) reports on enterprises drawn from the five cities' streams,
  so a Huizhou enterprise in the customs files is the same enterprise (same code,
  same name) as in Huizhou's own files for the same seed.
* **Valid by construction.** Required fields are always filled, codes are among
  the field's codes, subject types are among those the theme allows, identifiers
  are unique per subject, record keys are unique per theme and a stated
  publicity end lies inside the theme's publicity rule.
* **Flat memory, fast.** Rows stream to the files as subjects are generated;
  nothing is held per subject or per row (for million-row benchmarks).

Themes the generator does not know (a city's own catalog) get generic values of
the right type, so a city catalog still produces importable files.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import operator
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import orjson

from creditexchange.identifiers import (
    USCC_ALPHABET,
    resident_id_check_character,
    uscc_check_character,
)
from creditexchange.node.catalog import Catalog, CatalogField, FieldType, PublicityRule, Theme
from creditexchange.node.records.publicity import add_months, minimum_months
from creditexchange.subjects import is_individual

__all__ = [
    "DEFAULT_TODAY",
    "FEDERATION_CITIES",
    "KNOWN_REGIONS",
    "showcase_subject",
    "write_sample",
    "write_theme",
]

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

_T = TypeVar("_T")


class _Random(random.Random):
    """random.Random with a cheaper ``choice`` (one float draw, no rejection loop).

    Still a pure function of the seed, so the output stays deterministic.
    """

    def choice(self, seq: SupportsLenAndGetItem[_T]) -> _T:
        return seq[int(self.random() * len(seq))]


# ---------------------------------------------------------------------------
# Members and places

KNOWN_REGIONS: Final[dict[str, str]] = {
    "huizhou": "441300",
    "shenzhen": "440300",
    "dongguan": "441900",
    "heyuan": "441600",
    "shanwei": "441500",
    "customs": "440300",
}
"""Members of the 3+2 federation and their GB/T 2260 region codes."""

CUSTOMS_MEMBER: Final = "customs"
CUSTOMS_DEPARTMENT: Final = "customs"
FEDERATION_CITIES: Final = ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei")
"""The cities whose enterprises the customs member reports on, in round-robin order."""

JSONL_THEMES: Final = frozenset(
    {"serious_dishonesty", "dishonest_debtor", "credit_commitment", "customs_case"}
)
"""Themes written as JSON Lines; every other theme is written as CSV."""

DEFAULT_TODAY: Final = dt.date(2026, 11, 1)
ORDER_282_START: Final = dt.date(2026, 4, 1)
NO_TERM: Final = "2099-12-31"  # how 双公示 reports a licence without term

# Province abbreviations (court case numbers) by the first two digits of a region code.
_PROVINCE_ABBR: Final = {
    "11": "京", "12": "津", "13": "冀", "14": "晋", "15": "蒙", "21": "辽", "22": "吉",
    "23": "黑", "31": "沪", "32": "苏", "33": "浙", "34": "皖", "35": "闽", "36": "赣",
    "37": "鲁", "41": "豫", "42": "鄂", "43": "湘", "44": "粤", "45": "桂", "46": "琼",
    "50": "渝", "51": "川", "52": "黔", "53": "云", "54": "藏", "61": "陕", "62": "甘",
    "63": "青", "64": "宁", "65": "新", "71": "台", "81": "港", "82": "澳",
}  # fmt: skip

# Guangdong's prefecture cities: name, document-number abbreviation, plate letter.
_GUANGDONG: Final = {
    "440100": ("广州市", "穗", "A"), "440200": ("韶关市", "韶", "F"),
    "440300": ("深圳市", "深", "B"), "440400": ("珠海市", "珠", "C"),
    "440500": ("汕头市", "汕", "D"), "440600": ("佛山市", "佛", "E"),
    "440700": ("江门市", "江", "J"), "440800": ("湛江市", "湛", "G"),
    "440900": ("茂名市", "茂", "K"), "441200": ("肇庆市", "肇", "H"),
    "441300": ("惠州市", "惠", "L"), "441400": ("梅州市", "梅", "M"),
    "441500": ("汕尾市", "汕尾", "N"), "441600": ("河源市", "河", "P"),
    "441700": ("阳江市", "阳", "Q"), "441800": ("清远市", "清", "R"),
    "441900": ("东莞市", "东", "S"), "442000": ("中山市", "中", "T"),
    "445100": ("潮州市", "潮", "U"), "445200": ("揭阳市", "揭", "V"),
    "445300": ("云浮市", "云", "W"),
}  # fmt: skip

# Districts (address code, name) of the five federation cities. Dongguan has no
# districts: its towns share the city's address code.
_DISTRICTS: Final = {
    "441300": (("441302", "惠城区"), ("441303", "惠阳区"), ("441322", "博罗县"),
               ("441323", "惠东县"), ("441324", "龙门县")),
    "440300": (("440303", "罗湖区"), ("440304", "福田区"), ("440305", "南山区"),
               ("440306", "宝安区"), ("440307", "龙岗区"), ("440308", "盐田区"),
               ("440309", "龙华区"), ("440310", "坪山区"), ("440311", "光明区")),
    "441900": (("441900", "长安镇"), ("441900", "虎门镇"), ("441900", "南城街道"),
               ("441900", "塘厦镇"), ("441900", "松山湖")),
    "441600": (("441602", "源城区"), ("441621", "紫金县"), ("441622", "龙川县"),
               ("441623", "连平县"), ("441624", "和平县"), ("441625", "东源县")),
    "441500": (("441502", "城区"), ("441521", "海丰县"), ("441523", "陆河县"),
               ("441581", "陆丰市")),
}  # fmt: skip

# Birthplaces of people who moved to the city (address codes of their identity numbers).
_MIGRANT_ORIGINS: Final = ("430521", "360732", "450921", "511321", "445221", "440882")

_ROADS: Final = (
    "人民路", "建设路", "解放路", "新华路", "中山路", "文昌路", "江北大道", "东江大道",
    "长安路", "工业大道", "科技路", "滨江路", "南湖路", "金山大道",
)  # fmt: skip

_SURNAMES: Final = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余"
    "杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶"
    "黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
_GIVEN: Final = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国志文辉鹏飞婷雪慧晓燕宇浩俊"
    "帆嘉欣怡涵轩思远佳琪雨泽家豪锦荣海波永康德胜金凤丹阳晨"
)
_BRAND: Final = "华信达恒通盛源泰丰利鑫宏康瑞安隆兴宇辰创新嘉德汇美景星联合博海天正诚朗润祥"
_BRANDS: Final = tuple(a + b for a in _BRAND for b in _BRAND if a != b)
_NAMES2: Final = tuple(a + b for a in _SURNAMES for b in _GIVEN)
_CN_NUMBERS: Final = "一二三四五六七八九"
_COMMERCE_ORIGINS: Final = ("潮汕", "湖南", "江西", "客家", "广西", "四川", "福建", "梅州")
_ASSOCIATIONS: Final = ("摄影家", "书法家", "志愿者", "餐饮行业", "电子行业", "物流行业")


@dataclass(frozen=True, slots=True)
class _City:
    region: str
    name: str  # 惠州市; "" for a region the generator has no name for
    abbr: str  # 惠, the prefix of local document numbers
    plate: str  # 粤L…: the letter of special-equipment registration numbers
    districts: tuple[tuple[str, str], ...]

    def authority(self, suffix: str) -> str:
        return f"{self.name or f'（区划{self.region}）'}{suffix}"


def _city(region: str) -> _City:
    name, abbr, plate = _GUANGDONG.get(region, ("", "", "A"))
    districts = _DISTRICTS.get(region) or ((region[:4] + "02", ""), (region[:4] + "03", ""))
    return _City(region, name, abbr, plate, districts)


def _resolve_region(member: str, region: str | None) -> str:
    if region is None:
        if member not in KNOWN_REGIONS:
            raise ValueError(
                f"unknown member {member!r}: pass its region code (six-digit GB/T 2260, e.g. "
                f"region='440100' for Guangzhou); members known without one are "
                f"{', '.join(KNOWN_REGIONS)}"
            )
        region = KNOWN_REGIONS[member]
    if len(region) != 6 or not region.isdigit() or not region.isascii():
        raise ValueError(f"region code {region!r} is not six digits (GB/T 2260, e.g. '440100')")
    if region[:2] not in _PROVINCE_ABBR:
        raise ValueError(f"region code {region!r} does not start with a GB/T 2260 province code")
    return region


# ---------------------------------------------------------------------------
# Authorities: (name suffix, document-number word, penalty document word)

_AUTHORITIES: Final = {
    "market": ("市场监督管理局", "市监", "市监罚"),
    "tax": ("税务局", "税", "税罚"),
    "environment": ("生态环境局", "环", "环罚"),
    "emergency": ("应急管理局", "应急", "应急罚"),
    "housing": ("住房和城乡建设局", "建", "建罚"),
    "hr": ("人力资源和社会保障局", "人社", "人社罚"),
    "civil": ("民政局", "民", "民罚"),
    "institution_reg": ("事业单位登记管理局", "事登", "事登罚"),
    "fire": ("消防救援支队", "消", "消行罚决字"),
    "police": ("公安局", "公", "公（治）行罚决字"),
    "health": ("卫生健康局", "卫", "卫罚"),
    "transport": ("交通运输局", "交", "交罚"),
    "education": ("教育局", "教", "教罚"),
    "finance": ("财政局", "财", "财罚"),
    "development": ("发展和改革局", "发改", "发改罚"),
    "civilisation": ("精神文明建设委员会办公室", "文明", "文明罚"),
    "court": ("中级人民法院", "中法", "中法罚"),
}


def _authority_uscc(region: str, key: str) -> str:
    """A fixed, valid code for an authority (organs register under 11 + region)."""
    rng = random.Random(f"authority:{region}:{key}")
    body = "MB" + "".join(rng.choice(USCC_ALPHABET) for _ in range(6))
    first17 = "11" + region + body + _org_check(body)
    return first17 + uscc_check_character(first17)


# ---------------------------------------------------------------------------
# Identifiers

_ORG_WEIGHTS: Final = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_SPACE: Final = 31**6  # positions 11-16 of a USCC: unique per subject of a region
_BIRTH_FIRST: Final = dt.date(1950, 1, 1).toordinal()
_BIRTH_DAYS: Final = dt.date(2000, 12, 31).toordinal() - _BIRTH_FIRST + 1


_ORG_VALUE: Final = {c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_ORG_CHECK: Final = "0X987654321"  # by the weighted sum mod 11 (GB 11714)
_PAIRS31: Final = tuple(a + b for a in USCC_ALPHABET for b in USCC_ALPHABET)


def _org_check(body8: str) -> str:
    """GB 11714 check character of an organisation code (position 17 of a USCC)."""
    return _ORG_CHECK[sum(map(operator.mul, map(_ORG_VALUE.__getitem__, body8), _ORG_WEIGHTS)) % 11]


def _base31_6(value: int) -> str:
    """Six characters of the USCC alphabet, big-endian, for 0 <= value < 31**6."""
    high, low = divmod(value, 961)
    high, mid = divmod(high, 961)
    return _PAIRS31[high] + _PAIRS31[mid] + _PAIRS31[low]


def _uscc(kind: str, region: str, body8: str) -> str:
    first17 = kind + region + body8 + _org_check(body8)
    return first17 + uscc_check_character(first17)


def _resident_id(address: str, birth_ordinal: int, sequence: int) -> str:
    birth = dt.date.fromordinal(birth_ordinal)
    first17 = f"{address}{birth.year:04d}{birth.month:02d}{birth.day:02d}{sequence:03d}"
    return first17 + resident_id_check_character(first17)


class _Permutation:
    """x -> (a·x + b) mod m: a bijection of [0, m), so distinct indexes never collide."""

    def __init__(self, rng: random.Random, modulus: int) -> None:
        self.modulus = modulus
        a = rng.randrange(modulus // 3, modulus)
        while math.gcd(a, modulus) != 1:
            a += 1
        self.a = a % modulus or 1
        self.b = rng.randrange(modulus)

    def __call__(self, index: int) -> int:
        if index >= self.modulus:
            raise ValueError(f"at most {self.modulus} subjects per region can be generated")
        return (self.a * index + self.b) % self.modulus


# ---------------------------------------------------------------------------
# What subjects do: sectors, licences


@dataclass(frozen=True, slots=True)
class _Sector:
    word: str  # the part of the name saying what the subject does
    scope: str  # business scope
    industries: tuple[str, ...]  # penalty industries (admin_penalty.industry codes)
    licences: tuple[str, ...]  # keys of _LICENCES
    environmental: bool = False  # subject to the enterprise environmental credit rating


_SECTORS: Final = (
    _Sector(
        "电子科技",
        "电子产品、电子元器件的研发、生产和销售；货物进出口；技术进出口",
        ("other", "fire_safety", "work_safety", "environment"),
        ("pollutant",),
        True,
    ),
    _Sector(
        "新能源科技",
        "锂离子电池、储能设备的研发、生产和销售；货物进出口",
        ("work_safety", "environment", "fire_safety"),
        ("pollutant", "hazardous_chem"),
        True,
    ),
    _Sector(
        "食品", "食品生产；食品销售；农副产品收购", ("food",), ("food_production", "food_sale")
    ),
    _Sector(
        "餐饮管理",
        "餐饮服务；餐饮管理；食品销售",
        ("food", "fire_safety"),
        ("food_sale", "public_health"),
    ),
    _Sector("医药", "药品批发；药品零售；第二类医疗器械经营", ("drug",), ("drug_retail",)),
    _Sector(
        "建筑工程",
        "建设工程施工；建筑劳务分包；市政设施管理",
        ("construction", "work_safety"),
        ("construction_qual", "construction_permit"),
    ),
    _Sector(
        "房地产开发",
        "房地产开发经营；物业管理",
        ("construction", "other"),
        ("construction_permit",),
    ),
    _Sector(
        "物流",
        "道路货物运输（不含危险货物）；国内货物运输代理；仓储服务",
        ("work_safety", "other"),
        ("road_transport",),
    ),
    _Sector(
        "贸易", "国内贸易代理；货物进出口；技术进出口；日用百货销售", ("other",), ("food_sale",)
    ),
    _Sector(
        "五金塑胶制品",
        "五金产品制造；塑料制品制造；五金产品批发",
        ("work_safety", "environment"),
        ("pollutant",),
        True,
    ),
    _Sector(
        "化工",
        "化工产品生产（不含许可类化工产品）；危险化学品经营",
        ("work_safety", "environment"),
        ("hazardous_chem", "pollutant"),
        True,
    ),
    _Sector(
        "机械设备",
        "通用设备制造；机械设备销售；特种设备安装改造修理",
        ("special_equipment", "work_safety"),
        ("special_equipment",),
        True,
    ),
    _Sector(
        "电梯工程",
        "电梯安装、改造、修理；特种设备销售",
        ("special_equipment",),
        ("special_equipment",),
    ),
    _Sector(
        "环保科技",
        "环境保护专用设备制造；污水处理及其再生利用",
        ("environment",),
        ("pollutant",),
        True,
    ),
    _Sector(
        "家具", "家具制造；家具销售；木材加工", ("environment", "fire_safety"), ("pollutant",), True
    ),
    _Sector(
        "印刷包装",
        "包装装潢印刷品印刷；纸制品制造",
        ("environment", "work_safety"),
        ("pollutant",),
        True,
    ),
    _Sector(
        "石化",
        "成品油批发；石油制品销售；危险化学品经营",
        ("work_safety", "environment", "fire_safety"),
        ("hazardous_chem", "pollutant"),
        True,
    ),
    _Sector("燃气", "燃气经营；燃气器具安装、维修", ("work_safety", "fire_safety"), ("gas",)),
    _Sector(
        "人力资源服务", "劳务派遣服务；职业中介活动；人力资源服务", ("other",), ("labour_dispatch",)
    ),
    _Sector(
        "酒店管理",
        "住宿服务；餐饮服务；酒店管理",
        ("fire_safety", "food"),
        ("public_health", "food_sale"),
    ),
)

_SHOPS: Final = (
    _Sector("粮油店", "粮油、预包装食品零售", ("food",), ("food_sale",)),
    _Sector("餐饮店", "餐饮服务", ("food", "fire_safety"), ("food_sale",)),
    _Sector("五金店", "五金交电零售", ("other",), ()),
    _Sector("便利店", "预包装食品、日用百货零售", ("food",), ("food_sale",)),
    _Sector("汽车修理厂", "机动车维修", ("environment", "fire_safety"), ("pollutant",)),
    _Sector("服装店", "服装鞋帽零售", ("other",), ()),
    _Sector("大药房", "药品零售", ("drug",), ("drug_retail",)),
    _Sector("美发店", "理发及美容服务", ("other",), ("public_health",)),
    _Sector("小吃店", "小吃服务", ("food",), ("food_sale",)),
)

_INSTITUTIONS: Final = (
    _Sector(
        "第{n}人民医院",
        "为人民身体健康提供医疗与护理保健服务",
        ("drug", "fire_safety", "other"),
        ("medical_institution",),
    ),
    _Sector("第{n}中学", "实施高中学历教育，促进基础教育发展", ("fire_safety", "food"), ()),
    _Sector(
        "{d}社区卫生服务中心",
        "提供社区预防、保健、健康教育和基本医疗服务",
        ("drug", "other"),
        ("medical_institution",),
    ),
    _Sector("疾病预防控制中心", "疾病预防与控制、卫生检验检测", ("other",), ()),
    _Sector("公共资源交易中心", "为公共资源交易活动提供场所、设施和信息服务", ("other",), ()),
    _Sector("水利水电勘测设计院", "水利水电工程勘测、设计与咨询", ("construction",), ()),
    _Sector("{d}中心小学", "实施小学义务教育", ("fire_safety", "food"), ()),
)

_ASSOCIATION: Final = _Sector("协会", "行业交流、业务培训、咨询服务", ("other",), ())
_NON_ENTERPRISES: Final = (
    _Sector("培训学校", "非营利性文化艺术培训", ("fire_safety", "other"), ("private_school",)),
    _Sector("幼儿园", "学前教育", ("fire_safety", "food"), ("private_school",)),
    _Sector("养老院", "为老年人提供集中居住和照料服务", ("fire_safety", "food"), ()),
    _Sector("社会工作服务中心", "社会工作专业服务", ("other",), ()),
)
_FOUNDATION: Final = _Sector("基金会", "资助扶贫济困、助学助医等公益慈善项目", ("other",), ())
_PEOPLE: Final = _Sector("", "", ("other", "food", "tax"), ("physician", "constructor"))


@dataclass(frozen=True, slots=True)
class _LicenceKind:
    document: str
    category: str
    certificate: str
    contents: tuple[str, ...]
    authority: str
    years: int  # 0: no term
    number: Callable[[random.Random, _Subject, dt.date], str]


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


_LICENCES: Final[dict[str, _LicenceKind]] = {
    "food_sale": _LicenceKind(
        "食品经营许可决定书",
        "general",
        "食品经营许可证",
        (
            "预包装食品（含冷藏冷冻食品）销售；散装食品（不含冷藏冷冻食品）销售",
            "热食类食品制售；冷食类食品制售",
            "预包装食品销售；保健食品销售",
        ),
        "market",
        5,
        lambda r, s, d: f"JY1{s.district[0]}{_digits(r, 7)}",
    ),
    "food_production": _LicenceKind(
        "食品生产许可决定书",
        "general",
        "食品生产许可证",
        ("糕点（烘烤类糕点）", "饮料（包装饮用水）", "调味品（酱油、食醋）"),
        "market",
        5,
        lambda r, s, d: f"SC1{_digits(r, 2)}{s.district[0]}{_digits(r, 5)}",
    ),
    "drug_retail": _LicenceKind(
        "药品经营许可决定书",
        "general",
        "药品经营许可证",
        ("中药饮片、中成药、化学药制剂、抗生素制剂、生化药品、生物制品（除疫苗）",),
        "market",
        5,
        lambda r, s, d: f"粤CB{s.district[0][2:6]}{_digits(r, 3)}",
    ),
    "construction_qual": _LicenceKind(
        "建筑业企业资质核准决定书",
        "approval",
        "建筑业企业资质证书",
        (
            "建筑工程施工总承包二级；市政公用工程施工总承包三级",
            "地基基础工程专业承包二级",
            "建筑装修装饰工程专业承包二级",
        ),
        "housing",
        5,
        lambda r, s, d: f"D2{s.city.region[:2]}{_digits(r, 6)}",
    ),
    "construction_permit": _LicenceKind(
        "建筑工程施工许可决定书",
        "general",
        "建筑工程施工许可证",
        ("厂房及配套设施新建工程", "商住楼新建工程（地上二十八层）", "道路改造工程"),
        "housing",
        2,
        lambda r, s, d: f"{s.district[0]}{d.year:04d}{d.month:02d}{d.day:02d}{_digits(r, 2)}01",
    ),
    "pollutant": _LicenceKind(
        "排污许可决定书",
        "general",
        "排污许可证",
        (
            "主要污染物类别：废气（颗粒物、挥发性有机物）",
            "主要污染物类别：废水（化学需氧量、氨氮）",
        ),
        "environment",
        5,
        lambda r, s, d: f"{s.subject_id}001{r.choice('VPQ')}",
    ),
    "special_equipment": _LicenceKind(
        "特种设备使用登记决定",
        "registration",
        "特种设备使用登记证",
        (
            "电梯（曳引驱动乘客电梯）使用登记",
            "起重机械（桥式起重机）使用登记",
            "压力容器（固定式）使用登记",
        ),
        "market",
        0,
        lambda r, s, d: (
            f"{r.choice('梯起容')}11粤{s.city.plate}{_digits(r, 5)}({d.year % 100:02d})"
        ),
    ),
    "hazardous_chem": _LicenceKind(
        "危险化学品经营许可决定书",
        "general",
        "危险化学品经营许可证",
        ("汽油、柴油（不带储存设施经营）", "液化石油气、丙烷（不带储存设施经营）"),
        "emergency",
        3,
        lambda r, s, d: f"粤{s.city.abbr}危化经字〔{d.year}〕{_digits(r, 6)}",
    ),
    "gas": _LicenceKind(
        "燃气经营许可决定书",
        "franchise",
        "燃气经营许可证",
        ("瓶装液化石油气供应",),
        "housing",
        3,
        lambda r, s, d: f"粤{d.year}{s.city.region[2:4]}{_digits(r, 4)}L",
    ),
    "road_transport": _LicenceKind(
        "道路运输经营许可决定书",
        "general",
        "道路运输经营许可证",
        ("道路普通货物运输", "道路普通货物运输；货物专用运输（集装箱）"),
        "transport",
        4,
        lambda r, s, d: f"粤交运管许可{s.city.abbr}字{s.city.region}{_digits(r, 6)}",
    ),
    "public_health": _LicenceKind(
        "公共场所卫生许可决定书",
        "general",
        "卫生许可证",
        ("住宿业", "美容美发场所"),
        "health",
        4,
        lambda r, s, d: f"粤卫公证字〔{d.year}〕第{s.district[0]}{_digits(r, 5)}号",
    ),
    "labour_dispatch": _LicenceKind(
        "劳务派遣经营许可决定书",
        "general",
        "劳务派遣经营许可证",
        ("劳务派遣经营",),
        "hr",
        3,
        lambda r, s, d: f"{s.city.region}{d.year}{_digits(r, 4)}",
    ),
    "medical_institution": _LicenceKind(
        "医疗机构执业登记决定书",
        "registration",
        "医疗机构执业许可证",
        ("内科；外科；妇产科；儿科；医学检验科；医学影像科", "预防保健科；全科医疗科；中医科"),
        "health",
        5,
        lambda r, s, d: f"{_digits(r, 8)}{s.district[0]}{_digits(r, 2)}A1001",
    ),
    "private_school": _LicenceKind(
        "民办学校办学许可决定书",
        "general",
        "中华人民共和国民办学校办学许可证",
        ("文化艺术类培训", "学前教育"),
        "education",
        5,
        lambda r, s, d: f"教民{s.city.region}{d.year}{_digits(r, 6)}号",
    ),
    "physician": _LicenceKind(
        "医师执业注册决定书",
        "recognition",
        "医师执业证书",
        ("执业类别：临床；执业范围：内科专业", "执业类别：口腔；执业范围：口腔专业"),
        "health",
        0,
        lambda r, s, d: f"1{_digits(r, 2)}{s.city.region}{_digits(r, 8)}",
    ),
    "constructor": _LicenceKind(
        "注册建造师注册决定书",
        "recognition",
        "注册建造师注册证书",
        ("一级建造师（建筑工程）", "二级建造师（市政公用工程）"),
        "housing",
        3,
        lambda r, s, d: f"粤2{s.city.region[:4]}{d.year % 100:02d}{_digits(r, 5)}",
    ),
}


# ---------------------------------------------------------------------------
# Subjects


@dataclass(slots=True)
class _Subject:
    index: int
    subject_id: str
    subject_type: str
    name: str
    city: _City
    district: tuple[str, str]
    sector: _Sector
    org_form: str
    capital: str  # 万元, "" when not reported
    established: dt.date
    rep_name: str  # legal representative; the person's own name for individuals
    rep_id_type: str
    rep_id: str


_TYPE_CUTS: Final = (
    (0.68, "enterprise"),
    (0.82, "individual_business"),
    (0.86, "institution"),
    (0.90, "social_org"),
    (1.01, "individual"),
)
_PEOPLE_POOL: Final = 16_384
_ALL_TYPES: Final = frozenset(t for _, t in _TYPE_CUTS)
_TYPE_BY_PERCENT: Final = tuple(
    next(t for cut, t in _TYPE_CUTS if p / 100 < cut) for p in range(100)
)


class _SubjectStream:
    """The subjects of one region for one seed: subject k never depends on how many follow."""

    def __init__(self, region: str, seed: int, today: dt.date) -> None:
        self.city = _city(region)
        self.today = today
        self.rng = _Random(f"subjects:{seed}:{region}")
        self.people_rng = _Random(f"people:{seed}:{region}")
        perm_rng = random.Random(f"identifiers:{seed}:{region}")
        self.org_perm = _Permutation(perm_rng, _ORG_SPACE)
        addresses = tuple(dict.fromkeys(code for code, _ in self.city.districts))
        self.local_addresses = tuple(code for code, _ in self.city.districts)
        self.person_addresses = addresses + _MIGRANT_ORIGINS[:2]
        self.person_perm = _Permutation(perm_rng, len(self.person_addresses) * _BIRTH_DAYS * 999)
        self.today_ord = today.toordinal()
        self.founding_span = self.today_ord - dt.date(1995, 1, 1).toordinal()

    @cached_property
    def people(self) -> tuple[tuple[str, str], ...]:
        """Legal representatives: a fixed pool, so a subject costs no identity number of its own.

        16,384 people per region and seed; in a sample of a million subjects some
        people represent several organisations, as they do in life.
        """
        return tuple(self._person() for _ in range(_PEOPLE_POOL))

    def __iter__(self) -> Iterator[_Subject]:
        index = 0
        while True:
            yield self.subject(index)
            index += 1

    def _person(self) -> tuple[str, str]:
        """A random person (not unique): name and resident identity number."""
        r = self.people_rng.random
        name = _NAMES2[int(r() * len(_NAMES2))]
        if r() < 0.7:
            name += _GIVEN[int(r() * len(_GIVEN))]
        draw = r()
        address = (
            self.local_addresses[int(draw / 0.8 * len(self.local_addresses))]
            if draw < 0.8
            else _MIGRANT_ORIGINS[int(r() * len(_MIGRANT_ORIGINS))]
        )
        birth = _BIRTH_FIRST + int(r() * _BIRTH_DAYS)
        return name, _resident_id(address, birth, 1 + int(r() * 999))

    def subject(self, index: int) -> _Subject:
        """Subject ``index``; call with 0, 1, 2, … in order (it draws from the stream)."""
        rng = self.rng
        city = self.city
        subject_type = "enterprise" if index == 0 else _TYPE_BY_PERCENT[int(rng.random() * 100)]
        district = city.districts[int(rng.random() * len(city.districts))]
        rep_name, rep_id = self.people[int(rng.random() * _PEOPLE_POOL)]
        rep_id_type = "resident_id"
        days_ago = 90 + int(rng.random() ** 1.6 * self.founding_span)
        if index == 0:
            days_ago = max(days_ago, 6 * 365)
        established = dt.date.fromordinal(self.today_ord - days_ago)

        if is_individual(subject_type):
            x = self.person_perm(index)
            x, address = divmod(x, len(self.person_addresses))
            day, sequence = divmod(x, 999)
            subject_id = _resident_id(
                self.person_addresses[address], _BIRTH_FIRST + day, sequence + 1
            )
            return _Subject(
                index,
                subject_id,
                subject_type,
                rep_name,
                city,
                district,
                _PEOPLE,
                "",
                "",
                dt.date.fromordinal(_BIRTH_FIRST + day),
                rep_name,
                "",
                "",
            )

        prefix = "MA" if rng.random() < 0.75 else rng.choice(("MB", "7", "0")).ljust(2, "1")
        body8 = prefix + _base31_6(self.org_perm(index))
        district_name = district[1]
        if subject_type == "enterprise":
            sector = _SECTORS[int(rng.random() * len(_SECTORS))]
            brand = _BRANDS[int(rng.random() * len(_BRANDS))]
            form_draw = rng.random()
            if form_draw < 0.82:
                org_form, name = "llc", f"{city.name}{brand}{sector.word}有限公司"
            elif form_draw < 0.88:
                org_form, name = "joint_stock", f"{city.name}{brand}{sector.word}股份有限公司"
            elif form_draw < 0.95:
                org_form = "sole_proprietorship"
                name = f"{city.name}{district_name}{brand}{sector.word}商行"
            else:
                org_form = "branch"
                name = f"{city.name}{brand}{sector.word}有限公司{district_name}分公司"
            kind = "91"
            capital = _money(rng, 10, 5000) if org_form != "branch" else ""
            if rng.random() < 0.04:  # a Hong Kong or foreign investor's representative
                rep_id_type = "hk_macau_pass" if rng.random() < 0.7 else "passport"
                rep_id = ("H" if rep_id_type == "hk_macau_pass" else "E") + _digits(rng, 8)
        elif subject_type == "individual_business":
            sector = rng.choice(_SHOPS)
            name = f"{district_name}{rep_name[0]}记{sector.word}"
            org_form, kind = "individual_business", "92"
            capital = _money(rng, 1, 50) if rng.random() < 0.7 else ""
        elif subject_type == "institution":
            sector = rng.choice(_INSTITUTIONS)
            word = sector.word.format(n=rng.choice(_CN_NUMBERS), d=district_name)
            name = f"{city.name}{word}"
            org_form, kind = "public_institution", "12"
            capital = _money(rng, 50, 3000)
        else:
            draw = rng.random()
            if draw < 0.55:
                kind, org_form = "51", "social_group"
                if rng.random() < 0.5:
                    name = f"{city.name}{rng.choice(_COMMERCE_ORIGINS)}商会"
                else:
                    name = f"{city.name}{rng.choice(_ASSOCIATIONS)}协会"
                sector = _ASSOCIATION
            elif draw < 0.9:
                kind, org_form = "52", "private_non_enterprise"
                sector = rng.choice(_NON_ENTERPRISES)
                name = f"{city.name}{rng.choice(_BRANDS)}{sector.word}"
            else:
                kind, org_form = "53", "foundation"
                name = f"{city.name}{rng.choice(_BRANDS)}慈善基金会"
                sector = _FOUNDATION
            capital = _money(rng, 3, 400)
        return _Subject(
            index,
            _uscc(kind, city.region, body8),
            subject_type,
            name,
            city,
            district,
            sector,
            org_form,
            capital,
            established,
            rep_name,
            rep_id_type,
            rep_id,
        )


def _customs_subjects(seed: int, today: dt.date) -> Iterator[_Subject]:
    """Enterprises of the five cities, round robin: those customs reports on."""
    streams = [
        (s for s in _SubjectStream(KNOWN_REGIONS[m], seed, today) if s.subject_type == "enterprise")
        for m in FEDERATION_CITIES
    ]
    while True:
        for stream in streams:
            yield next(stream)


def _money(rng: random.Random, low: int, high: int) -> str:
    """An amount in 万元 between low and high, log-uniform, to the hundred yuan."""
    return _wan(_log_uniform(rng, low * 100, high * 100) * 100)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """An integer between low and high, spread evenly over the orders of magnitude."""
    return min(high, int(low * (high / low) ** rng.random()))


def _wan(yuan: int) -> str:
    """Whole yuan as 万元 with two decimals (exact for multiples of 100 yuan)."""
    return f"{yuan // 10000}.{yuan % 10000 // 100:02d}"


# ---------------------------------------------------------------------------
# The generation context

Value = str | int | bool
Values = dict[str, Value]
Context = dict[str, Any]


class _Gen:
    """Random source, anchor date and record counters of one generation run."""

    def __init__(self, rng: random.Random, today: dt.date, region: str) -> None:
        self.rng = rng
        self.today = today
        self.today_ord = today.toordinal()
        self.counters: dict[str, int] = {}
        self.home = _city(region)  # the member's own region (customs: where it sits)
        self._authorities: dict[tuple[str, str], tuple[str, str]] = {}

    def number(self, theme: str) -> int:
        n = self.counters.get(theme, 0) + 1
        self.counters[theme] = n
        return n

    def authority(self, city: _City, key: str) -> tuple[str, str]:
        """(name, USCC) of a city's authority."""
        found = self._authorities.get((city.region, key))
        if found is None:
            suffix = _AUTHORITIES[key][0]
            if key == "tax":
                name = f"国家税务总局{city.name or f'（区划{city.region}）'}税务局"
            elif key == "development" and city.region == "440300":
                name = "深圳市发展和改革委员会"
            else:
                name = city.authority(suffix)
            found = (name, _authority_uscc(city.region, key))
            self._authorities[(city.region, key)] = found
        return found

    def customs_office(self) -> tuple[str, str]:
        home = self.home
        found = self._authorities.get((home.region, "customs"))
        if found is None:
            name = f"{home.name.removesuffix('市') or home.region}海关"
            found = (name, _authority_uscc(home.region, "customs"))
            self._authorities[(home.region, "customs")] = found
        return found

    def date_between(self, first: dt.date, last: dt.date) -> dt.date:
        a, b = first.toordinal(), last.toordinal()
        if b <= a:
            return first
        return dt.date.fromordinal(a + int(self.rng.random() * (b - a + 1)))

    def days_ago(self, low: int, high: int, *, not_before: dt.date | None = None) -> dt.date:
        """A date between high and low days before today (and not before ``not_before``)."""
        first = self.today_ord - high
        if not_before is not None:
            first = max(first, min(not_before.toordinal(), self.today_ord - low))
        last = self.today_ord - low
        return dt.date.fromordinal(first + int(self.rng.random() * (last - first + 1)))

    def pick(self, weighted: tuple[tuple[str, float], ...]) -> str:
        draw = self.rng.random()
        for value, cut in weighted:
            if draw < cut:
                return value
        return weighted[-1][0]

    def doc(self, city: _City, word: str, year: int, n: int) -> str:
        return f"{city.abbr or city.region}{word}〔{year}〕{n:04d}号"

    def stated_end(self, theme: Theme, values: Values, probability: float) -> None:
        """Sometimes state an early publicity end, inside the theme's rule and not after today."""
        rule = theme.publicity
        if rule is None or rule.end_field is None or self.rng.random() >= probability:
            return
        start = values.get(rule.start_field)
        if not isinstance(start, str):
            return
        end = _end_within(rule, dt.date.fromisoformat(start), values, self.today, self)
        if end is not None:
            values[rule.end_field] = end.isoformat()


def _end_within(
    rule: PublicityRule, start: dt.date, values: Mapping[str, object], today: dt.date, g: _Gen
) -> dt.date | None:
    earliest = add_months(start, minimum_months(rule, values))
    latest = today if rule.max_months is None else min(add_months(start, rule.max_months), today)
    if earliest > latest:
        return None
    return g.date_between(earliest, latest)


def _legal_rep(s: _Subject, values: Values) -> None:
    if is_individual(s.subject_type):
        return
    values["legal_representative"] = s.rep_name
    values["legal_rep_id_type"] = s.rep_id_type
    values["legal_rep_id_number"] = s.rep_id


def _short(district: str) -> str:
    """惠城区 -> 惠城, 长安镇 -> 长安, 城区 -> 城区 (as in 市场监督管理局惠城分局)."""
    if len(district) > 2 and district[-1] in "区县市镇":
        return district[:-1]
    return district.removesuffix("街道")


def _address(g: _Gen, s: _Subject) -> str:
    rng = g.rng
    road = rng.choice(_ROADS)
    place = f"{s.city.name}{s.district[1]}{road}{1 + int(rng.random() * 300)}号"
    if rng.random() < 0.5:
        place += (
            f"{1 + int(rng.random() * 12)}栋{1 + int(rng.random() * 20)}0{rng.randrange(1, 9)}室"
        )
    return place


# ---------------------------------------------------------------------------
# Builders: one row of a known theme

Builder = Callable[[_Gen, Theme, _Subject, Context], tuple[str, Values]]


def _registration(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    status = (
        "active"
        if s.index == 0
        else g.pick(
            (
                ("active", 0.90),
                ("cancelled", 0.95),
                ("revoked", 0.98),
                ("moved_out", 0.99),
                ("suspended", 1.0),
            )
        )
    )
    if s.subject_type in ("enterprise", "individual_business"):
        market = g.authority(s.city, "market")[0]
        authority = (
            f"{market}{_short(s.district[1])}分局"
            if s.subject_type == "individual_business" and s.district[1]
            else market
        )
    elif s.subject_type == "institution":
        authority = g.authority(s.city, "institution_reg")[0]
    else:
        authority = g.authority(s.city, "civil")[0]
    values: Values = {
        "legal_representative": s.rep_name,
        "org_form": s.org_form,
        "registered_capital": s.capital,
        "establishment_date": s.established.isoformat(),
        "address": _address(g, s),
        "business_scope": s.sector.scope,
        "registration_authority": authority,
        "registration_status": status,
    }
    if s.subject_type == "enterprise" and rng.random() < 0.6:
        term = add_months(s.established, 12 * rng.choice((20, 30, 50)))
        values["operating_period_to"] = term.isoformat()
    if rng.random() < 0.7:
        values["approval_date"] = g.days_ago(1, 3000, not_before=s.established).isoformat()
    return s.subject_id, values


def _admin_license(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    kinds = s.sector.licences or ("food_sale",)
    kind = _LICENCES[rng.choice(kinds)]
    showcase = ctx.get("showcase", False) and not ctx.get("licence_done")
    ctx["licence_done"] = True
    decided = (
        g.days_ago(30, 300, not_before=s.established)
        if showcase
        else g.days_ago(1, 6 * 365, not_before=s.established)
    )
    valid_to = add_months(decided, 12 * kind.years) if kind.years else None
    if valid_to is not None and valid_to < g.today:
        status = "expired"
    else:
        status = g.pick((("valid", 0.94), ("cancelled", 0.97), ("revoked", 0.99), ("withdrawn", 1)))
        if showcase:
            status = "valid"
    authority, authority_uscc = g.authority(s.city, kind.authority)
    number = g.doc(
        s.city, _AUTHORITIES[kind.authority][1] + "许", decided.year, g.number(theme.code)
    )
    values: Values = {
        "license_document_name": kind.document,
        "license_document_number": number,
        "license_category": kind.category,
        "certificate_name": kind.certificate,
        "certificate_number": kind.number(rng, s, decided),
        "license_content": rng.choice(kind.contents),
        "decision_date": decided.isoformat(),
        "valid_from": decided.isoformat(),
        "valid_to": valid_to.isoformat() if valid_to else NO_TERM,
        "issuing_authority": authority,
        "issuing_authority_uscc": authority_uscc,
        "current_status": status,
        "data_source_department": authority,
        "data_source_uscc": authority_uscc,
    }
    if rng.random() < 0.08:
        values["remarks"] = rng.choice(("延续许可", "变更许可事项", "换发新证"))
    _legal_rep(s, values)
    return number, values


@dataclass(frozen=True, slots=True)
class _Offence:
    violation: str
    facts: str  # {date}: when it was found
    basis: str
    authority: str
    penalties: tuple[str, ...]  # penalty_type codes it usually draws
    fine: tuple[int, int]  # yuan


_OFFENCES: Final[dict[str, tuple[_Offence, ...]]] = {
    "food": (
        _Offence(
            "未取得食品经营许可从事食品经营活动",
            "{date}，执法人员检查发现当事人未取得食品经营许可即从事食品经营活动。",
            "《中华人民共和国食品安全法》第一百二十二条第一款",
            "market",
            ("fine", "confiscation"),
            (5_000, 100_000),
        ),
        _Offence(
            "未按规定建立并执行从业人员健康管理制度",
            "{date}，执法人员检查发现当事人安排未取得健康证明的人员从事接触直接入口食品的工作。",
            "《中华人民共和国食品安全法》第一百二十六条第一款",
            "market",
            ("warning", "fine"),
            (5_000, 50_000),
        ),
    ),
    "drug": (
        _Offence(
            "销售劣药",
            "{date}，经抽样检验，当事人销售的药品含量不符合国家药品标准，为劣药。",
            "《中华人民共和国药品管理法》第一百一十七条第一款",
            "market",
            ("fine", "confiscation"),
            (100_000, 500_000),
        ),
        _Offence(
            "未遵守药品经营质量管理规范",
            "{date}，检查发现当事人未按规定储存、养护药品。",
            "《中华人民共和国药品管理法》第一百二十六条",
            "market",
            ("warning", "fine"),
            (100_000, 500_000),
        ),
    ),
    "special_equipment": (
        _Offence(
            "使用未经定期检验的特种设备",
            "{date}，检查发现当事人使用的电梯超过检验有效期仍在使用。",
            "《中华人民共和国特种设备安全法》第八十四条第一项",
            "market",
            ("fine", "suspension"),
            (30_000, 300_000),
        ),
        _Offence(
            "特种设备使用未按规定办理使用登记",
            "{date}，检查发现当事人使用的起重机械未办理使用登记。",
            "《中华人民共和国特种设备安全法》第八十三条第一项",
            "market",
            ("fine",),
            (10_000, 100_000),
        ),
    ),
    "work_safety": (
        _Offence(
            "未按规定对从业人员进行安全生产教育和培训",
            "{date}，检查发现当事人未对新入职从业人员进行安全生产教育和培训。",
            "《中华人民共和国安全生产法》第九十七条第三项",
            "emergency",
            ("warning", "fine"),
            (10_000, 100_000),
        ),
        _Offence(
            "未采取措施消除事故隐患",
            "{date}，检查发现当事人对责令限期整改的事故隐患逾期未整改。",
            "《中华人民共和国安全生产法》第一百零二条",
            "emergency",
            ("fine", "suspension"),
            (50_000, 100_000),
        ),
    ),
    "fire_safety": (
        _Offence(
            "消防设施、器材未保持完好有效",
            "{date}，检查发现当事人场所内自动喷水灭火系统未保持完好有效。",
            "《中华人民共和国消防法》第六十条第一款第一项",
            "fire",
            ("fine",),
            (5_000, 50_000),
        ),
        _Offence(
            "占用、堵塞、封闭疏散通道、安全出口",
            "{date}，检查发现当事人场所安全出口被封闭。",
            "《中华人民共和国消防法》第六十条第一款第三项",
            "fire",
            ("warning", "fine"),
            (5_000, 50_000),
        ),
    ),
    "environment": (
        _Offence(
            "超过大气污染物排放标准排放大气污染物",
            "{date}，经监测，当事人废气排放口挥发性有机物浓度超过排放标准。",
            "《中华人民共和国大气污染防治法》第九十九条第二项",
            "environment",
            ("fine",),
            (100_000, 1_000_000),
        ),
        _Offence(
            "建设项目未依法进行环境影响评价擅自开工建设",
            "{date}，检查发现当事人建设项目环境影响报告表未经批准即开工建设。",
            "《中华人民共和国环境影响评价法》第三十一条第一款",
            "environment",
            ("fine",),
            (50_000, 500_000),
        ),
    ),
    "construction": (
        _Offence(
            "未取得施工许可证擅自施工",
            "{date}，检查发现当事人建设项目未取得施工许可证即开工建设。",
            "《中华人民共和国建筑法》第六十四条",
            "housing",
            ("fine",),
            (20_000, 200_000),
        ),
        _Offence(
            "违法分包工程",
            "{date}，检查发现当事人将承包的工程分包给不具备相应资质的单位。",
            "《建设工程质量管理条例》第六十二条第一款",
            "housing",
            ("fine", "suspension"),
            (50_000, 500_000),
        ),
    ),
    "tax": (
        _Offence(
            "未按照规定期限办理纳税申报",
            "当事人未按照规定期限办理{date}所属期的纳税申报。",
            "《中华人民共和国税收征收管理法》第六十二条",
            "tax",
            ("fine",),
            (200, 10_000),
        ),
        _Offence(
            "未按照规定办理税务登记变更",
            "当事人税务登记内容发生变化，至{date}仍未办理变更登记。",
            "《中华人民共和国税收征收管理法》第六十条第一款第一项",
            "tax",
            ("warning", "fine"),
            (200, 10_000),
        ),
    ),
    "other": (
        _Offence(
            "虚假宣传",
            "{date}，检查发现当事人在经营场所及网店对商品的性能作虚假的商业宣传。",
            "《中华人民共和国反不正当竞争法》第二十条第一款",
            "market",
            ("fine",),
            (100_000, 1_000_000),
        ),
        _Offence(
            "发布虚假广告",
            "{date}，检查发现当事人发布含有虚假内容的广告。",
            "《中华人民共和国广告法》第五十五条第一款",
            "market",
            ("fine", "confiscation"),
            (10_000, 200_000),
        ),
    ),
}

_PUBLIC_ORDER: Final = _Offence(
    "殴打他人",
    "{date}，当事人在公共场所与他人发生纠纷并殴打他人。",
    "《中华人民共和国治安管理处罚法》第四十三条第一款",
    "police",
    ("detention", "fine"),
    (200, 500),
)

_CN_DAYS: Final = ("五日", "七日", "十日", "十五日")


def _admin_penalty(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    showcase = ctx.get("showcase", False) and not ctx.get("penalty_done")
    ctx["penalty_done"] = True
    draw = rng.random()
    if is_individual(s.subject_type) and draw < 0.15:
        industry, offence = "other", _PUBLIC_ORDER
    else:
        industry = (
            "tax"
            if draw < 0.12
            else "fire_safety"
            if draw < 0.17
            else rng.choice(s.sector.industries)
        )
        offence = rng.choice(_OFFENCES[industry])
    decided = (
        g.days_ago(20, 200, not_before=s.established)
        if showcase
        else g.days_ago(1, 4 * 365, not_before=s.established)
    )
    found = dt.date.fromordinal(decided.toordinal() - 20 - int(rng.random() * 60))
    kind = rng.choice(offence.penalties)
    if showcase:
        kind = "fine"
    low, high = offence.fine
    fine = max(low, _log_uniform(rng, low, high) // 100 * 100)
    authority, authority_uscc = g.authority(s.city, offence.authority)
    number = g.doc(s.city, _AUTHORITIES[offence.authority][2], decided.year, g.number(theme.code))
    values: Values = {
        "decision_number": number,
        "violation_type": offence.violation,
        "violation_facts": offence.facts.format(date=f"{found.year}年{found.month}月{found.day}日"),
        "legal_basis": offence.basis,
        "penalty_type": kind,
        "decision_date": decided.isoformat(),
        "deciding_authority": authority,
        "deciding_authority_uscc": authority_uscc,
        "data_source_department": authority,
        "data_source_uscc": authority_uscc,
        "industry": industry,
    }
    if kind == "warning":
        values["penalty_content"] = "警告"
    elif kind == "fine":
        values["penalty_content"] = f"罚款人民币{fine}元"
        values["fine_amount"] = _wan(fine)
    elif kind == "confiscation":
        gains = (200 + int(rng.random() * 50_000)) // 100 * 100
        values["penalty_content"] = f"没收违法所得人民币{gains}元，并处罚款人民币{fine}元"
        values["confiscated_amount"] = _wan(gains)
        values["fine_amount"] = _wan(fine)
    elif kind == "detention":
        days = rng.choice(_CN_DAYS)
        values["penalty_content"] = f"行政拘留{days}"
        values["penalty_valid_until"] = (decided + dt.timedelta(days=15)).isoformat()
    else:  # suspension (and revocation, which no template draws by default)
        licences = s.sector.licences
        if licences and not is_individual(s.subject_type):
            licence = _LICENCES[rng.choice(licences)]
            values["suspended_license_name"] = licence.certificate
            values["suspended_license_number"] = licence.number(rng, s, s.established)
            values["penalty_content"] = (
                f"暂扣《{licence.certificate}》三个月，并处罚款人民币{fine}元"
            )
        else:
            values["penalty_content"] = f"责令停产停业整顿一个月，并处罚款人民币{fine}元"
        values["fine_amount"] = _wan(fine)
        values["penalty_valid_until"] = add_months(decided, 3).isoformat()
    if rng.random() < 0.1:
        values["remarks"] = rng.choice(("当事人已履行完毕", "当事人已缴清罚款", "已整改到位"))
    _legal_rep(s, values)
    if not showcase:
        g.stated_end(theme, values, 0.15)
    return number, values


@dataclass(frozen=True, slots=True)
class _ListKind:
    name: str
    authority: str
    word: str
    reasons: tuple[str, ...]
    basis: str
    measures: str
    types: frozenset[str]


_BLACK_LISTS: Final = (
    _ListKind(
        "重大税收违法失信主体",
        "tax",
        "税失信",
        ("虚开增值税专用发票", "采取欺骗、隐瞒手段进行虚假纳税申报，少缴应纳税款100万元以上"),
        "《重大税收违法失信主体信息公布管理办法》（国家税务总局令第54号）",
        "纳税信用级别直接判为D级；限制取得政府供应土地、参与政府采购；限制高消费",
        frozenset({"enterprise", "individual_business", "individual"}),
    ),
    _ListKind(
        "市场监督管理严重违法失信名单",
        "market",
        "市监失信",
        ("被列入经营异常名录届满3年仍未履行相关义务", "生产销售不符合食品安全标准的食品，情节严重"),
        "《市场监督管理严重违法失信名单管理办法》（国家市场监督管理总局令第44号）",
        "限制参与政府采购、工程招投标、国有土地出让；不予授予荣誉称号；实施重点监管",
        frozenset({"enterprise", "individual_business"}),
    ),
    _ListKind(
        "拖欠农民工工资失信联合惩戒对象名单",
        "hr",
        "人社失信",
        ("克扣、无故拖欠农民工工资，数额达到认定拒不支付劳动报酬罪数额标准",),
        "《拖欠农民工工资失信联合惩戒对象名单管理暂行办法》（人力资源社会保障部令第45号）",
        "限制政府资金支持、政府采购、招投标、生产许可、评优评先；限制高消费",
        frozenset({"enterprise", "individual_business", "individual"}),
    ),
    _ListKind(
        "安全生产严重失信主体名单",
        "emergency",
        "应急失信",
        (
            "发生较大生产安全事故，对事故发生负有责任",
            "未依法取得安全生产许可，擅自从事生产经营活动",
        ),
        "《安全生产严重失信主体名单管理办法》（应急管理部令第11号）",
        "加大执法检查频次；限制参与政府采购、工程招投标；不予享受财政资金支持",
        frozenset({"enterprise"}),
    ),
    _ListKind(
        "社会组织严重违法失信名单",
        "civil",
        "民失信",
        ("被列入活动异常名录满2年", "弄虚作假办理变更登记，被撤销登记"),
        "《社会组织信用信息管理办法》（民政部令第60号）",
        "不给予资金资助；不向其购买服务；不予评优评先",
        frozenset({"social_org"}),
    ),
    _ListKind(
        "政府采购严重违法失信行为记录名单",
        "finance",
        "财失信",
        ("提供虚假材料谋取中标、成交", "与采购人、其他供应商恶意串通"),
        "《中华人民共和国政府采购法》第七十七条",
        "一至三年内禁止参加政府采购活动",
        frozenset({"enterprise", "institution", "social_org"}),
    ),
)


def _serious_dishonesty(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    kinds = [k for k in _BLACK_LISTS if s.subject_type in k.types] or list(_BLACK_LISTS)
    kind = rng.choice(kinds)
    included = g.days_ago(1, 4 * 365, not_before=s.established)
    authority, authority_uscc = g.authority(s.city, kind.authority)
    number = g.doc(s.city, kind.word, included.year, g.number(theme.code))
    values: Values = {
        "list_name": kind.name,
        "list_authority": authority,
        "list_authority_uscc": authority_uscc,
        "inclusion_document_number": number,
        "inclusion_reason": rng.choice(kind.reasons),
        "inclusion_date": included.isoformat(),
        "legal_basis": kind.basis,
        "measures": kind.measures,
    }
    g.stated_end(theme, values, 0.3)
    end_field = theme.publicity.end_field if theme.publicity else None
    if end_field and end_field in values:
        values["removal_reason"] = "已纠正失信行为、履行相关义务，经申请提前移出"
    return number, values


_HONOURS: Final = (
    ("守合同重信用企业", "provincial", "market", 2, frozenset({"enterprise"})),
    ("纳税信用A级纳税人", "municipal", "tax", 1, frozenset({"enterprise", "individual_business"})),
    ("诚信示范企业", "municipal", "development", 3, frozenset({"enterprise"})),
    ("诚信经营示范店", "district", "market", 2, frozenset({"individual_business"})),
    ("诚信自律示范社会组织", "municipal", "civil", 3, frozenset({"social_org"})),
    ("诚信建设示范单位", "municipal", "development", 3, frozenset({"institution"})),
    ("诚实守信模范", "municipal", "civilisation", 0, frozenset({"individual"})),
)


def _honours(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    kinds = [k for k in _HONOURS if s.subject_type in k[4]] or list(_HONOURS)
    name, level, authority_key, years, _types = rng.choice(kinds)
    awarded = g.days_ago(30, 5 * 365, not_before=s.established)
    authority, authority_uscc = g.authority(s.city, authority_key)
    if level == "provincial":
        authority = "广东省" + _AUTHORITIES[authority_key][0]
        authority_uscc = _authority_uscc(s.city.region[:2] + "0000", authority_key)
    number = g.doc(
        s.city, _AUTHORITIES[authority_key][1] + "信誉", awarded.year, g.number(theme.code)
    )
    values: Values = {
        "honour_name": name,
        "honour_level": level,
        "awarding_authority": authority,
        "awarding_authority_uscc": authority_uscc,
        "document_number": number,
        "award_date": awarded.isoformat(),
        "honour_content": f"经评审认定为{name}",
    }
    if years:
        values["valid_until"] = add_months(awarded, 12 * years).isoformat()
    return number, values


_REMOVAL_FOR: Final = {
    "no_annual_report": "annual_report_filed",
    "unreachable": "contactable",
    "no_disclosure": "information_corrected",
    "false_information": "information_corrected",
}


def _abnormal_operation(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    reason = g.pick(
        (
            ("no_annual_report", 0.70),
            ("unreachable", 0.95),
            ("no_disclosure", 0.98),
            ("false_information", 1.0),
        )
    )
    if reason == "no_annual_report":
        # Annual reports are due by 30 June; the listing follows in July.
        year = g.today.year - 1 - int(rng.random() * 4)
        year = max(year, s.established.year + 1)
        included = dt.date(year, 7, 1 + int(rng.random() * 20))
        if included >= g.today:
            included = g.days_ago(1, 60)
    else:
        included = g.days_ago(1, 4 * 365, not_before=s.established)
    market = g.authority(s.city, "market")[0]
    authority = (
        f"{market}{_short(s.district[1])}分局"
        if s.subject_type == "individual_business" and s.district[1]
        else market
    )
    number = g.doc(s.city, "市监异", included.year, g.number(theme.code))
    values: Values = {
        "inclusion_reason": reason,
        "inclusion_decision_number": number,
        "inclusion_date": included.isoformat(),
        "inclusion_authority": authority,
    }
    if rng.random() < 0.3 and included < g.today - dt.timedelta(days=8):
        values["removal_date"] = g.date_between(
            included + dt.timedelta(days=7), g.today - dt.timedelta(days=1)
        ).isoformat()
        values["removal_reason"] = _REMOVAL_FOR[reason]
        values["removal_authority"] = authority
    return number, values


_OBLIGATIONS: Final = (
    "支付货款人民币{amount}元及逾期付款利息",
    "偿还借款本金人民币{amount}元及利息",
    "支付工程款人民币{amount}元",
    "支付劳动报酬人民币{amount}元",
    "赔偿经济损失人民币{amount}元并承担案件受理费",
)


def _dishonest_debtor(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    city = s.city
    province = _PROVINCE_ABBR[city.region[:2]]
    if rng.random() < 0.3 or not s.district[1]:
        court = g.authority(city, "court")[0]
        court_code = city.region[2:4]
    elif s.district[0] == city.region:  # Dongguan: courts are numbered, not by district
        court, court_code = f"{city.name}第一人民法院", city.region[2:4] + "71"
    else:
        court, court_code = f"{city.name}{s.district[1]}人民法院", s.district[0][2:6]
    filed = g.days_ago(60, 5 * 365, not_before=s.established)
    published = g.date_between(
        filed + dt.timedelta(days=30), min(filed + dt.timedelta(days=200), g.today)
    )
    case_number = f"（{filed.year}）{province}{court_code}执{g.number(theme.code)}号"
    judged = filed.year - (rng.random() < 0.6)
    amount = (5_000 + int(rng.random() ** 2 * 5_000_000)) // 100 * 100
    values: Values = {
        "case_number": case_number,
        "enforcement_court": court,
        "enforcement_basis_number": f"（{judged}）{province}{court_code}民初{_digits(rng, 4)}号",
        "enforcement_basis_authority": court,
        "obligations": rng.choice(_OBLIGATIONS).format(amount=amount),
        "performance_status": "unperformed" if rng.random() < 0.8 else "partially_performed",
        "dishonest_behaviour": g.pick(
            (
                ("able_but_refusing", 0.75),
                ("property_report_violation", 0.85),
                ("consumption_ban_violation", 0.90),
                ("false_litigation", 0.95),
                ("settlement_refusal", 0.98),
                ("evading_enforcement", 1.0),
            )
        ),
        "filing_date": filed.isoformat(),
        "publish_date": published.isoformat(),
    }
    if not is_individual(s.subject_type):
        values["legal_representative"] = s.rep_name
    g.stated_end(theme, values, 0.15)
    end_field = theme.publicity.end_field if theme.publicity else None
    if end_field and end_field in values:
        values["performance_status"] = "performed"
    return case_number, values


_COMMITMENTS: Final = (
    ("approval_substitute", "{licence}告知承诺", "market"),
    ("fault_tolerant", "营业执照变更登记容缺受理", "market"),
    ("certification", "证明事项告知承诺（依法纳税证明）", "tax"),
    ("industry_self_discipline", "行业自律承诺", "development"),
    ("voluntary", "主动公开信用承诺", "development"),
)
_COMMITMENT_TEXT: Final = (
    "本单位（本人）承诺所提供的材料真实、准确、完整、有效，如有虚假，"
    "愿意承担相应的法律责任，并同意将违诺情况纳入信用记录，接受失信惩戒。"
)


def _credit_commitment(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    if ctx.get("penalty_done") and rng.random() < 0.5:
        kind, matter, authority_key = (
            "credit_repair",
            "信用修复承诺（行政处罚信息提前停止公示）",
            "development",
        )
    elif is_individual(s.subject_type):
        kind, matter, authority_key = ("certification", "证明事项告知承诺（无犯罪记录证明）", "hr")
    else:
        kind, matter, authority_key = rng.choice(_COMMITMENTS)
        if "{licence}" in matter:
            licences = s.sector.licences or ("food_sale",)
            matter = matter.format(licence=_LICENCES[rng.choice(licences)].certificate)
    committed = g.days_ago(1, 3 * 365, not_before=s.established)
    status = g.pick((("performing", 0.40), ("performed", 0.95), ("breached", 1.0)))
    number = g.doc(s.city, "信诺", committed.year, g.number(theme.code))
    values: Values = {
        "commitment_type": kind,
        "matter": matter,
        "commitment_content": _COMMITMENT_TEXT,
        "commitment_date": committed.isoformat(),
        "receiving_authority": g.authority(s.city, authority_key)[0],
        "performance_status": status,
    }
    if status != "performing":
        values["check_date"] = g.date_between(committed, g.today).isoformat()
    if status == "breached":
        values["breach_description"] = "经核查，承诺人提交的材料与实际情况不符，未履行承诺。"
    return number, values


_TAX_GRADES: Final = (("A", 0.25), ("B", 0.75), ("M", 0.90), ("C", 0.97), ("D", 1.0))
_TAX_SCORES: Final = {"A": (90, 100), "B": (70, 90), "M": (70, 90), "C": (40, 70), "D": (0, 40)}
_ENV_GRADES: Final = (("env_green", 0.3), ("env_blue", 0.8), ("env_yellow", 0.95), ("env_red", 1.0))
_ORG_GRADES: Final = (("5A", 0.1), ("4A", 0.35), ("3A", 0.8), ("2A", 0.95), ("1A", 1.0))


def _credit_rating(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    rows = ctx.get("ratings", 0)
    ctx["ratings"] = rows + 1
    year = g.today.year - 1 - rows
    if s.subject_type == "social_org":
        scheme, grade, authority_key = "social_org_assessment", g.pick(_ORG_GRADES), "civil"
        evaluated = dt.date(year, 11, 1 + int(rng.random() * 28))
        valid_years = 5
    elif s.sector.environmental and rng.random() < 0.3:
        scheme, grade, authority_key = "environment", g.pick(_ENV_GRADES), "environment"
        evaluated = dt.date(year + 1, 6, 1 + int(rng.random() * 28))
        valid_years = 1
    else:
        scheme, grade, authority_key = "tax", g.pick(_TAX_GRADES), "tax"
        if ctx.get("showcase"):
            grade = "B"
        evaluated = dt.date(year + 1, 4, 1 + int(rng.random() * 25))
        valid_years = 1
    if evaluated >= g.today:
        evaluated = g.days_ago(1, 30)
    authority, authority_uscc = g.authority(s.city, authority_key)
    prefix = {"tax": "NSXY", "environment": "HJXY", "social_org_assessment": "SZPG"}[scheme]
    key = f"{prefix}{s.city.region}{year}{g.number(theme.code):08d}"
    values: Values = {
        "rating_scheme": scheme,
        "grade": grade,
        "year": year,
        "evaluating_authority": authority,
        "evaluating_authority_uscc": authority_uscc,
        "evaluation_date": evaluated.isoformat(),
        "valid_until": dt.date(evaluated.year + valid_years, 12, 31).isoformat(),
    }
    if scheme == "tax" and grade != "M":
        low, high = _TAX_SCORES[grade]
        values["score"] = f"{low + rng.random() * (high - low - 0.1):.1f}"
    return key, values


# Customs ----------------------------------------------------------------------

_CUSTOMS_GRADES: Final = (  # most registered enterprises are regular; AEOs are a few percent
    ("advanced_certified", 0.02),
    ("certified", 0.07),
    ("regular", 0.97),
    ("dishonest", 0.995),
    ("seriously_dishonest", 1.0),
)
_GRADE_251: Final = {
    "advanced_certified": "advanced_certified",
    "certified": "other",
    "regular": "other",
    "dishonest": "dishonest",
    "seriously_dishonest": "dishonest",
}
_GRADE_MEASURES: Final = {
    "advanced_certified": (
        "适用较低进出口货物平均查验率；优先办理通关手续；享受AEO互认国家（地区）通关便利"
    ),
    "certified": "适用较低进出口货物平均查验率；优先办理通关手续",
    "dishonest": "适用较高进出口货物平均查验率；加强单证审核和稽查核查",
    "seriously_dishonest": "适用较高进出口货物平均查验率；列入严重失信主体名单并实施联合惩戒",
}
_CUSTOMS_OFFICES: Final = ("皇岗海关", "文锦渡海关", "蛇口海关", "大鹏海关", "深圳湾海关")


def _customs_state(g: _Gen, s: _Subject, ctx: Context) -> Context:
    """Per-enterprise customs facts shared by the customs themes."""
    state: Context | None = ctx.get("customs")
    if state is None:
        rng = g.rng
        grade = "certified" if ctx.get("showcase") else g.pick(_CUSTOMS_GRADES)
        zone = rng.choice("1245679")
        ownership = g.pick((("6", 0.7), ("4", 0.8), ("3", 0.88), ("1", 0.92), ("9", 1.0)))
        state = {
            "grade": grade,
            "code": f"{s.city.region[:4]}{zone}{ownership}{_digits(rng, 4)}",
            "history": g.today >= ORDER_282_START and rng.random() < 0.3,
            "grade_rows": 0,
            "cases": 0,
        }
        ctx["customs"] = state
    return state


def _customs_credit_grade(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    state = _customs_state(g, s, ctx)
    row = state["grade_rows"]
    state["grade_rows"] = row + 1
    office = g.customs_office()
    if g.today < ORDER_282_START or (state["history"] and row == 0):
        regime, grade = "order_251", _GRADE_251[state["grade"]]
        last = min(ORDER_282_START - dt.timedelta(days=1), g.today)
        decided = g.date_between(dt.date(2022, 1, 1), last)
    else:
        regime, grade = "order_282", state["grade"]
        decided = g.date_between(ORDER_282_START, g.today)
        state["decided"] = decided
    if rng.random() < 0.3:
        source = rng.choice(_CUSTOMS_OFFICES) if office[0] == "深圳海关" else office[0]
    else:
        source = office[0]
    number = f"{office[0][:1]}关信〔{decided.year}〕{g.number(theme.code):04d}号"
    values: Values = {
        "regime": regime,
        "grade": grade,
        "customs_code": state["code"],
        "decision_number": number,
        "decision_date": decided.isoformat(),
        "source_customs": source,
    }
    if grade in _GRADE_MEASURES:
        values["measures"] = _GRADE_MEASURES[grade]
    return number, values


@dataclass(frozen=True, slots=True)
class _CustomsOffence:
    kind: str
    facts: str
    basis: str
    penalty: str  # {fine}: the fine in yuan


_CUSTOMS_OFFENCES: Final = (
    _CustomsOffence(
        "customs_violation",
        "当事人以一般贸易方式申报出口货物，申报商品编号不实，影响海关统计准确性。",
        "《中华人民共和国海关行政处罚实施条例》第十五条第一项",
        "罚款人民币{fine}元",
    ),
    _CustomsOffence(
        "customs_violation",
        "当事人申报进口货物的价格不实，影响国家税款征收。",
        "《中华人民共和国海关行政处罚实施条例》第十五条第四项",
        "罚款人民币{fine}元",
    ),
    _CustomsOffence(
        "customs_violation",
        "当事人未经海关许可，擅自将海关监管货物转让他人。",
        "《中华人民共和国海关行政处罚实施条例》第十八条第一款第一项",
        "罚款人民币{fine}元",
    ),
    _CustomsOffence(
        "smuggling",
        "当事人采取低报价格方式走私普通货物进境，偷逃税款。",
        "《中华人民共和国海关法》第八十二条；《中华人民共和国海关行政处罚实施条例》第九条",
        "没收走私货物，并处罚款人民币{fine}元",
    ),
    _CustomsOffence(
        "smuggling",
        "当事人伪报贸易方式，将保税料件擅自内销，偷逃税款。",
        "《中华人民共和国海关法》第八十二条；《中华人民共和国海关行政处罚实施条例》第九条",
        "追缴偷逃税款，并处罚款人民币{fine}元",
    ),
)


def _customs_case(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    state = _customs_state(g, s, ctx)
    state["cases"] += 1
    offence = rng.choice(_CUSTOMS_OFFENCES)
    smuggling = offence.kind == "smuggling"
    office, office_uscc = g.customs_office()
    decided = g.days_ago(1, 4 * 365, not_before=s.established)
    if ctx.get("showcase"):
        offence = _CUSTOMS_OFFENCES[0]
        smuggling = False
        decided = g.date_between(max(ORDER_282_START, g.today - dt.timedelta(days=200)), g.today)
    fine = (5_000 + int(rng.random() ** 2 * (2_000_000 if smuggling else 200_000))) // 100 * 100
    word = "缉决字" if smuggling else "违字"
    number = f"{office[:1]}关{word}〔{decided.year}〕{g.number(theme.code):04d}号"
    values: Values = {
        "case_number": number,
        "case_kind": offence.kind,
        "violation_facts": offence.facts,
        "legal_basis": offence.basis,
        "penalty_content": offence.penalty.format(fine=fine),
        "fine_amount": _wan(fine),
        "decision_date": decided.isoformat(),
        "deciding_customs": (
            rng.choice(_CUSTOMS_OFFICES) if office == "深圳海关" and rng.random() < 0.4 else office
        ),
        "deciding_customs_uscc": office_uscc,
    }
    if decided >= ORDER_282_START:
        values["record_grade"] = (
            g.pick((("general", 0.7), ("serious", 1.0)))
            if smuggling
            else g.pick((("minor", 0.6), ("general", 1.0)))
        )
        repair = (
            "not_repaired"
            if ctx.get("showcase")
            else g.pick((("not_repaired", 0.7), ("applied", 0.85), ("repaired", 1.0)))
        )
        values["repair_status"] = repair
        if repair == "repaired":
            values["repair_date"] = g.date_between(decided, g.today).isoformat()
    if not ctx.get("showcase"):
        g.stated_end(theme, values, 0.1)
    return number, values


def _customs_light(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    rng = g.rng
    state = _customs_state(g, s, ctx)
    yellow = state["cases"] > 0 or state["grade"] in ("dishonest", "seriously_dishonest")
    if ctx.get("showcase"):
        yellow = False
    graded: dt.date | None = state.get("decided")
    effective = g.date_between(graded, g.today) if graded is not None else g.days_ago(1, 2 * 365)
    if yellow:
        reason = (
            "企业近两年内有走私或违反海关监管规定行为记录"
            if state["cases"]
            else "企业被海关认定为失信企业"
        )
        measures = "列为黄灯企业：加强进出口环节监管，提高查验比例，开展诚信约谈"
    else:
        reason = "企业守法诚信，无走私违规记录" + (
            "，为海关认证企业" if state["grade"] in ("certified", "advanced_certified") else ""
        )
        measures = "列为绿灯企业：优先办理通关业务，减少日常核查"
    number = f"LD{s.city.region}{effective.year}{g.number(theme.code):07d}"
    values: Values = {
        "light": "yellow" if yellow else "green",
        "effective_date": effective.isoformat(),
        "reason": reason,
        "measures": measures,
        "deciding_body": f"{s.city.name}打击走私综合治理办公室、{g.customs_office()[0]}",
    }
    if rng.random() < 0.7:
        values["valid_until"] = add_months(effective, 12).isoformat()
    return number, values


# How often a subject has rows in a theme: probability of a first row by subject
# type, probability of each further row, and the most rows a subject gets.
@dataclass(frozen=True, slots=True)
class _Recipe:
    build: Builder
    rates: Mapping[str, float]
    more: float = 0.0
    most: int = 1
    count: Callable[[_Gen, _Subject, Context], int] | None = None


def _orgs(rate: float, individual: float = 0.0) -> dict[str, float]:
    return {
        "enterprise": rate,
        "individual_business": rate,
        "institution": rate / 2,
        "social_org": rate / 2,
        "individual": individual,
    }


def _customs_case_count(g: _Gen, s: _Subject, ctx: Context) -> int:
    state = _customs_state(g, s, ctx)
    if ctx.get("showcase"):
        return 1
    if state["grade"] in ("dishonest", "seriously_dishonest"):
        return 1 + (g.rng.random() < 0.4)
    return int(g.rng.random() < 0.04)


def _customs_grade_count(g: _Gen, s: _Subject, ctx: Context) -> int:
    state = _customs_state(g, s, ctx)
    return 2 if state["history"] else 1


def _customs_light_count(g: _Gen, s: _Subject, ctx: Context) -> int:
    state = _customs_state(g, s, ctx)
    if (
        ctx.get("showcase")
        or state["cases"]
        or state["grade"] in ("dishonest", "seriously_dishonest")
    ):
        return 1
    rate = 0.9 if state["grade"] in ("certified", "advanced_certified") else 0.25
    return int(g.rng.random() < rate)


_RECIPES: Final[dict[str, _Recipe]] = {
    "registration": _Recipe(_registration, _orgs(1.0) | {"institution": 1.0, "social_org": 1.0}),
    "admin_license": _Recipe(_admin_license, _orgs(0.5, 0.3), more=0.4, most=3),
    "admin_penalty": _Recipe(_admin_penalty, _orgs(0.3, 0.2), more=0.25, most=3),
    "serious_dishonesty": _Recipe(_serious_dishonesty, _orgs(0.02, 0.03)),
    "honours": _Recipe(_honours, _orgs(0.05, 0.02)),
    "abnormal_operation": _Recipe(_abnormal_operation, _orgs(0.05)),
    "dishonest_debtor": _Recipe(_dishonest_debtor, _orgs(0.02, 0.12), more=0.2, most=3),
    "credit_commitment": _Recipe(_credit_commitment, _orgs(0.2, 0.2), more=0.2, most=2),
    "credit_rating": _Recipe(_credit_rating, _orgs(0.4) | {"social_org": 0.4}, more=0.5, most=3),
    "customs_credit_grade": _Recipe(_customs_credit_grade, {}, count=_customs_grade_count),
    "customs_case": _Recipe(_customs_case, {}, count=_customs_case_count),
    "customs_light_status": _Recipe(_customs_light, {}, count=_customs_light_count),
}
_SHOWCASE_THEMES: Final = frozenset(
    {
        "registration",
        "admin_license",
        "admin_penalty",
        "credit_rating",
        "customs_credit_grade",
        "customs_case",
        "customs_light_status",
    }
)


def _generic(g: _Gen, theme: Theme, s: _Subject, ctx: Context) -> tuple[str, Values]:
    """A row of a theme the generator does not know: fields filled by type."""
    values: Values = {}
    for f in theme.fields:
        if f.required or g.rng.random() < 0.5:
            values[f.name] = _generic_value(g, f, values)
    key = f"{theme.code.upper()}-{s.city.region}-{g.number(theme.code):08d}"
    g.stated_end(theme, values, 0.15)
    return key, values


_GENERIC_RECIPE: Final = _Recipe(_generic, _orgs(0.2, 0.1))


def _generic_value(g: _Gen, f: CatalogField, values: Mapping[str, Value]) -> Value:
    rng = g.rng
    if f.type is FieldType.DATE:
        return g.days_ago(1, 3 * 365).isoformat()
    if f.type is FieldType.DECIMAL:
        return f"{rng.random() * 100:.2f}"
    if f.type is FieldType.INTEGER:
        return g.today.year - int(rng.random() * 3)
    if f.type is FieldType.BOOLEAN:
        return rng.random() < 0.5
    if f.type is FieldType.CODE:
        assert f.codes is not None
        if f.name.endswith("id_type") and "resident_id" in f.codes:
            return "resident_id"
        return rng.choice(list(f.codes))
    if f.type is FieldType.USCC:
        return _authority_uscc(g.home.region, "development")
    if f.type is FieldType.ID_NUMBER:
        birth = _BIRTH_FIRST + int(rng.random() * _BIRTH_DAYS)
        return _resident_id(g.home.districts[0][0], birth, 1 + int(rng.random() * 999))
    text = f"{f.name_zh}{1 + int(rng.random() * 999)}"
    return text[: f.max_length] if f.max_length else text


# ---------------------------------------------------------------------------
# Writing


class _ThemeWriter:
    """Streams one theme's rows to its file, making every row fit the catalog."""

    def __init__(self, theme: Theme, path: Path, g: _Gen) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise ValueError(f"{path}: name the file .csv or .jsonl")
        self.theme = theme
        self.path = path
        self.g = g
        self.jsonl = suffix == ".jsonl"
        self.recipe = _RECIPES.get(theme.code, _GENERIC_RECIPE)
        self.names = [f.name for f in theme.fields]
        self.required = [f for f in theme.fields if f.required]
        self.required_names = frozenset(f.name for f in self.required)
        self.coded = [(f, frozenset(f.codes)) for f in theme.fields if f.codes is not None]
        self.booleans = [f.name for f in theme.fields if f.type is FieldType.BOOLEAN]
        self.integers = [f.name for f in theme.fields if f.type is FieldType.INTEGER]
        self.width = 4 + len(self.names)
        self.allowed = frozenset(t.value for t in theme.subject_types)
        self.showcased = theme.code in _SHOWCASE_THEMES
        rule = theme.publicity
        self.rule = rule if rule is not None and rule.end_field in theme.field_by_name else None
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[Any]
        if self.jsonl:
            self._file = path.open("wb", buffering=1 << 20)
        else:
            self._file = path.open("w", encoding="utf-8", newline="", buffering=1 << 20)
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._csv.writerow(
                ["subject_id", "subject_type", "subject_name", "record_key"]
                + [f.name for f in theme.fields]
            )

    def count(self, s: _Subject, ctx: Context) -> int:
        """How many rows subject ``s`` gets in this theme (at least one for the showcase)."""
        recipe = self.recipe
        if recipe.count is not None:
            n = recipe.count(self.g, s, ctx)
        else:
            random_ = self.g.rng.random
            n = 0
            if random_() < recipe.rates.get(s.subject_type, 0.0):
                n = 1
                while n < recipe.most and random_() < recipe.more:
                    n += 1
        if n == 0 and self.showcased and ctx["showcase"]:
            n = 1
        return n

    def row(self, s: _Subject, ctx: Context) -> None:
        key, values = self.recipe.build(self.g, self.theme, s, ctx)
        self._fit(values)
        self.rows += 1
        if self.jsonl:
            record: dict[str, Value] = {
                "subject_id": s.subject_id,
                "subject_type": s.subject_type,
                "subject_name": s.name,
                "record_key": key,
            }
            for name in self.names:
                value = values.get(name, "")
                if value != "":
                    record[name] = value
            self._file.write(orjson.dumps(record) + b"\n")
        else:
            for name in self.booleans:
                if isinstance(values.get(name), bool):
                    values[name] = "true" if values[name] else "false"
            for name in self.integers:
                if name in values:
                    values[name] = str(values[name])
            get = values.get
            cells = [s.subject_id, s.subject_type, s.name, key, *[get(n, "") for n in self.names]]
            try:
                line = ",".join(cells)  # type: ignore[arg-type]  # str, but for odd catalogs
            except TypeError:
                cells = [c if isinstance(c, str) else str(c) for c in cells]
                line = ",".join(cells)  # type: ignore[arg-type]
            # The csv module's output when nothing needs quoting, without its per-cell cost.
            if (
                line.count(",") == self.width - 1
                and '"' not in line
                and "\n" not in line
                and "\r" not in line
            ):
                self._file.write(line + "\n")
            else:
                self._csv.writerow(cells)

    def _fit(self, values: Values) -> None:
        """Fill what a city's catalog requires beyond the recipe; fix what it forbids."""
        get = values.get
        if not self.required_names <= values.keys() or "" in values.values():
            for f in self.required:
                if get(f.name, "") == "":
                    values[f.name] = _generic_value(self.g, f, values)
        for f, codes in self.coded:
            value = get(f.name, "")
            if value != "" and value not in codes:
                values[f.name] = _generic_value(self.g, f, values)
        rule = self.rule
        if rule is not None and rule.end_field is not None and values.get(rule.end_field):
            start = dt.date.fromisoformat(str(values[rule.start_field]))
            end = dt.date.fromisoformat(str(values[rule.end_field]))
            earliest = add_months(start, minimum_months(rule, values))
            latest = None if rule.max_months is None else add_months(start, rule.max_months)
            if end < earliest or (latest is not None and end > latest):
                fixed = _end_within(rule, start, values, max(self.g.today, earliest), self.g)
                if fixed is None:
                    del values[rule.end_field]
                else:
                    values[rule.end_field] = fixed.isoformat()

    def close(self) -> None:
        self._file.close()


def _member_themes(catalog: Catalog, member: str) -> list[Theme]:
    customs = member == CUSTOMS_MEMBER
    return [t for t in catalog.themes if (t.source_department == CUSTOMS_DEPARTMENT) == customs]


def _subjects(member: str, region: str, seed: int, today: dt.date) -> Iterator[_Subject]:
    if member == CUSTOMS_MEMBER:
        return _customs_subjects(seed, today)
    return iter(_SubjectStream(region, seed, today))


def write_sample(
    catalog: Catalog,
    member: str,
    subjects: int,
    seed: int,
    out: Path,
    region: str | None = None,
    *,
    today: dt.date = DEFAULT_TODAY,
) -> list[Path]:
    """Write one department file per theme of ``member`` into ``out``; returns their paths.

    A city writes every theme not owned by customs; ``customs`` writes the customs
    themes about enterprises of the five federation cities. The first subject
    (:func:`showcase_subject`) has a registration, a licence, a penalty and a
    rating (for customs: a grade, a case and a light status).
    """
    region = _resolve_region(member, region)
    if subjects < 0:
        raise ValueError(f"subjects must be at least 0, got {subjects}")
    themes = _member_themes(catalog, member)
    out.mkdir(parents=True, exist_ok=True)
    g = _Gen(_Random(f"records:{seed}:{member}:{region}"), today, region)
    writers = [
        _ThemeWriter(t, out / f"{t.code}{'.jsonl' if t.code in JSONL_THEMES else '.csv'}", g)
        for t in themes
    ]
    try:
        stream = _subjects(member, region, seed, today)
        for n in range(subjects):
            s = next(stream)
            ctx: Context = {"showcase": n == 0}
            for w in writers:
                if s.subject_type not in w.allowed:
                    continue
                for _ in range(w.count(s, ctx)):
                    w.row(s, ctx)
    finally:
        for w in writers:
            w.close()
    return [w.path for w in writers]


def write_theme(
    catalog: Catalog,
    theme_code: str,
    member: str,
    n_records: int,
    seed: int,
    out_file: Path,
    region: str | None = None,
    *,
    today: dt.date = DEFAULT_TODAY,
) -> Path:
    """Write exactly ``n_records`` rows of one theme (.csv or .jsonl by the file's suffix).

    Every row concerns a fresh subject of the member's stream (of a type the theme
    allows) and has its own record key: made for import benchmarks.
    """
    region = _resolve_region(member, region)
    if n_records < 0:
        raise ValueError(f"n_records must be at least 0, got {n_records}")
    theme = catalog.theme(theme_code)
    available = {"enterprise"} if member == CUSTOMS_MEMBER else _ALL_TYPES
    if not available & set(theme.subject_types):
        raise ValueError(
            f"theme {theme_code} allows only {', '.join(theme.subject_types)}; member "
            f"{member} has no such subjects"
        )
    g = _Gen(_Random(f"theme:{seed}:{member}:{region}:{theme_code}"), today, region)
    writer = _ThemeWriter(theme, out_file, g)
    try:
        stream = _subjects(member, region, seed, today)
        while writer.rows < n_records:
            s = next(stream)
            if s.subject_type in writer.allowed:
                writer.row(s, {"showcase": s.index == 0 and writer.rows == 0})
    finally:
        writer.close()
    return out_file


def showcase_subject(member: str, seed: int, region: str | None = None) -> str:
    """The id of the subject ``write_sample`` gives the richest records (its first)."""
    region = _resolve_region(member, region)
    return next(_subjects(member, region, seed, DEFAULT_TODAY)).subject_id
