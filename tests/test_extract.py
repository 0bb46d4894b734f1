"""Tests for adapter.extract: a table of what people really type, plus properties."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.core.contact import validate_contact
from adapter.core.extract import Extraction, extract_contact

CHRIS = "Chris Doe"
MAIL = "chris@example.com"
US = "+14155552671"
UK = "+442079460958"
NOT_VALID = "is not a valid phone number"
NO_CC = "write it with its country code"
NAME_ERR = "is not a name"

# text, default_region, name, email, phone, {field: substring of the error}
CASES: list[tuple[str, str | None, str | None, str | None, str | None, dict[str, str]]] = [
    # free order, spaces only
    ("Chris Doe chris@example.com +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("chris@example.com Chris Doe +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("+1 415 555 2671 chris@example.com Chris Doe", None, CHRIS, MAIL, US, {}),
    ("Chris Doe +1-415-555-2671 chris@example.com", None, CHRIS, MAIL, US, {}),
    ("Chris Doe +1.415.555.2671", None, CHRIS, None, US, {}),
    ("Chris Doe +1 (415) 555-2671", None, CHRIS, None, US, {}),
    ("Chris Doe +14155552671", None, CHRIS, None, US, {}),
    ("  Chris   Doe   chris@example.com  ", None, CHRIS, MAIL, None, {}),
    # separators
    ("Chris Doe, chris@example.com, +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe; chris@example.com; +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe | chris@example.com | +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe\nchris@example.com\n+1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe,chris@example.com,+14155552671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe - chris@example.com - +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe / chris@example.com / +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    # labels
    ('name="Chris Doe" email=chris@example.com phone=+14155552671', None, CHRIS, MAIL, US, {}),
    (
        'name="Chris Doe" email="chris@example.com" phone="+1 415 555 2671"',
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    (
        "name: Chris Doe, email: chris@example.com, phone: +1 415 555 2671",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    ("Name: Chris Doe; E-Mail: chris@example.com; Tel: +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("NAME: Chris Doe MAIL: chris@example.com MOBILE: +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("name:Chris Doe|email:chris@example.com|tel:+14155552671", None, CHRIS, MAIL, US, {}),
    (
        "email: chris@example.com\nname: Chris Doe\nphone: +1 415 555 2671",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    ("full name: Chris Doe, e-mail: chris@example.com", None, CHRIS, MAIL, None, {}),
    ("name = Chris Doe, mobile = +1 415 555 2671", None, CHRIS, None, US, {}),
    ("Chris Doe email chris@example.com phone +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe, email: chris@example.com, +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("name: 'Chris O'Brien', email: chris@example.com", None, "Chris O'Brien", MAIL, None, {}),
    ('name: "Doe, Chris" chris@example.com', None, "Doe, Chris", MAIL, None, {}),
    # quoted names
    ('"Chris Doe" chris@example.com', None, CHRIS, MAIL, None, {}),
    ("'Chris Doe' chris@example.com", None, CHRIS, MAIL, None, {}),
    ("“Chris Doe” chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <chris@example.com>", None, CHRIS, MAIL, None, {}),
    ("Chris Doe (chris@example.com)", None, CHRIS, MAIL, None, {}),
    ("Doe, Chris - chris@example.com", None, "Doe, Chris", MAIL, None, {}),
    # names from everywhere
    (
        "José Álvarez jose@example.es +34 912 345 678",
        None,
        "José Álvarez",
        "jose@example.es",
        "+34912345678",
        {},
    ),
    ("Siobhán O'Brien siobhan@example.ie", None, "Siobhán O'Brien", "siobhan@example.ie", None, {}),
    (
        "Jan van der Berg jan@example.nl +31 20 123 4567",
        None,
        "Jan van der Berg",
        "jan@example.nl",
        "+31201234567",
        {},
    ),
    ("María de la Cruz maria@example.mx", None, "María de la Cruz", "maria@example.mx", None, {}),
    (
        "张伟 zhang@example.cn +86 10 1234 5678",
        None,
        "张伟",
        "zhang@example.cn",
        "+861012345678",
        {},
    ),
    (
        "Ελένη Παπαδοπούλου eleni@example.gr",
        None,
        "Ελένη Παπαδοπούλου",
        "eleni@example.gr",
        None,
        {},
    ),
    (
        "Анна Иванова anna@example.ru +7 495 123-45-67",
        None,
        "Анна Иванова",
        "anna@example.ru",
        "+74951234567",
        {},
    ),
    ("محمد علي mohammed@example.ae", None, "محمد علي", "mohammed@example.ae", None, {}),
    ("Jean-Luc Picard jl@example.fr", None, "Jean-Luc Picard", "jl@example.fr", None, {}),
    ("Chris 🙂 Doe chris@example.com", None, "Chris 🙂 Doe", MAIL, None, {}),
    # phones: prefixes and national forms
    ("Chris Doe 00 44 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 0044 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 011 44 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 011-44-20-7946-0958", "US", CHRIS, None, UK, {}),
    ("Chris Doe (415) 555-2671", "US", CHRIS, None, US, {}),
    ("Chris Doe 415.555.2671", "us", CHRIS, None, US, {}),
    ("Chris Doe 020 7946 0958", "GB", CHRIS, None, UK, {}),
    ("Chris Doe 0113 496 0000", "GB", CHRIS, None, "+441134960000", {}),
    ("Chris Doe +44 (0)20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe +1 415 555 2671 ext. 22", None, CHRIS, None, US, {}),
    ("Chris Doe, +1 415 555 2671 x22, chris@example.com", None, CHRIS, MAIL, US, {}),
    # Slack auto-links
    ("Chris Doe <mailto:chris@example.com|chris@example.com>", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <tel:+14155552671|+1 415 555 2671>", None, CHRIS, None, US, {}),
    (
        "<mailto:chris@example.com|chris@example.com> <tel:+14155552671|+1 415 555 2671> Chris Doe",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    # a link Slack made of something typed is a link, not part of a name
    ("Chris <http://doe.com|Doe.com> chris@example.com", None, "Chris", MAIL, None, {}),
    ("Chris Doe <mailto:chris@example.com>", None, CHRIS, MAIL, None, {}),
    # bad values are reported, never silently ignored or swallowed into the name
    ("Chris +1 555", None, "Chris", None, None, {"phone": "'+1 555' is not a valid phone number"}),
    ("Chris Doe +1 123 456 7890 chris@example.com", None, CHRIS, MAIL, None, {"phone": NOT_VALID}),
    ("Chris Doe 415 555 2671", None, CHRIS, None, None, {"phone": NO_CC}),
    ("Chris Doe 12", None, CHRIS, None, None, {"phone": "'12' is not a phone number"}),
    (
        "Chris Doe chris@example",
        None,
        CHRIS,
        None,
        None,
        {"email": "'chris@example' is not a valid email address"},
    ),
    ("Chris Doe chris@@example.com", None, CHRIS, None, None, {"email": "not a valid email"}),
    ("Chris Doe @chris", None, CHRIS, None, None, {"email": "'@chris' is not a valid email"}),
    (
        "email: chris at example dot com, name: Chris",
        None,
        "Chris",
        None,
        None,
        {"email": "'chris at example dot com' is not a valid email address"},
    ),
    ("name: Chris, phone: n/a", None, "Chris", None, None, {"phone": "'n/a' is not a phone"}),
    # two different values for one field
    (
        "Chris a@example.com b@example.com",
        None,
        "Chris",
        None,
        None,
        {"email": "two different emails given: 'a@example.com' and 'b@example.com'; give one"},
    ),
    (
        "Chris +1 415 555 2671 +44 20 7946 0958",
        None,
        "Chris",
        None,
        None,
        {"phone": "two different phone numbers given: '+1 415 555 2671' and '+44 20 7946 0958'"},
    ),
    (
        "Chris a@example.com b@example.com c@example.com",
        None,
        "Chris",
        None,
        None,
        {"email": "3 different emails given: 'a@example.com', 'b@example.com' and 'c@example.com'"},
    ),
    (
        "name: Chris Doe, Acme Inc, chris@example.com",
        None,
        None,
        MAIL,
        None,
        {"name": "two different names given: 'Chris Doe' and 'Acme Inc'"},
    ),
    (
        "Chris Doe +1 415 555 2671 / +1 555 0000",
        None,
        CHRIS,
        None,
        None,
        {"phone": "two different phone numbers"},
    ),
    # the same value twice is fine
    ("Chris chris@example.com chris@example.com", None, "Chris", MAIL, None, {}),
    ("Chris Chris@Example.com chris@example.com", None, "Chris", "Chris@example.com", None, {}),
    ("Chris +1 415 555 2671, tel: (415) 555-2671", "US", "Chris", None, US, {}),
    (
        "Chris Doe <mailto:chris@example.com|chris@example.com> email: chris@example.com",
        None,
        CHRIS,
        MAIL,
        None,
        {},
    ),
    # nothing invented
    ("chris@example.com", None, None, MAIL, None, {}),
    ("+1 415 555 2671", None, None, None, US, {}),
    ("Chris Doe", None, CHRIS, None, None, {}),
    ("", None, None, None, None, {}),
    ("   \n , ; | ", None, None, None, None, {}),
    ("name:", None, None, None, None, {}),
    ("chris@example.com.", None, None, MAIL, None, {}),
    # whatever words it contains
    (
        "payload token=abc & Chris = Doe chris@example.com",
        None,
        "payload & Chris = Doe",  # token=abc is a key, not a field: ignored (a warning)
        MAIL,
        None,
        {},
    ),
    (
        "Chris O'Brien-Smith (Acme) chris@example.com",
        None,
        "Chris O'Brien-Smith (Acme)",
        MAIL,
        None,
        {},
    ),
    ("Chris2 Doe chris@example.com", None, "Chris2 Doe", MAIL, None, {}),
    # Slack mentions and web links are never part of the name
    ("<@U123|bob> Chris Doe chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<@U0123ABC> Chris Doe, chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <#C123|general> chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<!here> Chris Doe chris@example.com +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("<!subteam^S123|@support> Chris Doe chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <https://acme.com|acme.com> chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<https://acme.com|acme.com> chris@example.com", None, None, MAIL, None, {}),
    ("Chris Doe <chris@example.com>", None, CHRIS, MAIL, None, {}),
    # Slack bold / italic / strike around the email
    ("Chris Doe *chris@example.com*", None, CHRIS, MAIL, None, {}),
    ("Chris Doe _chris@example.com_", None, CHRIS, MAIL, None, {}),
    ("Chris Doe ~chris@example.com~", None, CHRIS, MAIL, None, {}),
    ("*Chris Doe* *<mailto:chris@example.com|chris@example.com>*", None, CHRIS, MAIL, None, {}),
    ("_Chris Doe_ _chris@example.com_ +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe _chris@example.com", None, CHRIS, "_chris@example.com", None, {}),
    # invisible formatting characters: an error, except ZWNJ / ZWJ (Persian, Indic names)
    ("Chris \u202eeoD chris@example.com", None, None, MAIL, None, {"name": "invisible formatting"}),
    ("Chris\u200b Doe chris@example.com", None, None, MAIL, None, {"name": "invisible formatting"}),
    (
        "\u0645\u0647\u200c\u0633\u0627 chris@example.com",
        None,
        "\u0645\u0647\u200c\u0633\u0627",
        MAIL,
        None,
        {},
    ),
    (
        "\u0915\u094d\u200d\u0937 chris@example.com",
        None,
        "\u0915\u094d\u200d\u0937",
        MAIL,
        None,
        {},
    ),
]

# What people type around their details (issue 15), one row per line.
# fmt: off
CASES += [
    # 1. lead-ins, closing courtesies and notes around the details (15 languages)
    ("please add Donna Moore donna@example.com +1 415 555 2671", None, "Donna Moore", "donna@example.com", US, {}),
    ("new lead: Donna Moore, donna@example.com", None, "Donna Moore", "donna@example.com", None, {}),
    ("Could you register Steven Villegas steven@example.com? Thanks!", None, "Steven Villegas", "steven@example.com", None, {}),
    ("Can you add Steven Villegas steven@example.com +1 415 555 2671 thanks!", None, "Steven Villegas", "steven@example.com", US, {}),
    ("Steven Villegas steven@example.com Thx!", None, "Steven Villegas", "steven@example.com", None, {}),
    ("Steven Villegas, steven@example.com (called yesterday)", None, "Steven Villegas", "steven@example.com", None, {}),
    ("steven@example.com Steven Villegas (called yesterday)", None, "Steven Villegas", "steven@example.com", None, {}),
    ("Hi team, please add this new contact: Ana Lima ana@example.com", None, "Ana Lima", "ana@example.com", None, {}),
    ("Hey can you please add Priya Patel priya@example.com, she called about pricing", None, "Priya Patel", "priya@example.com", None, {}),
    ('please add name="Tom Becker" email=tom@example.com', None, "Tom Becker", "tom@example.com", None, {}),
    ("can you add name: Tom Becker, email: tom@example.com, thanks", None, "Tom Becker", "tom@example.com", None, {}),
    ("FYI: Tom Becker tom@example.com", None, "Tom Becker", "tom@example.com", None, {}),
    ("Website lead from the pricing page: Tom Becker, tom@example.com", None, "Tom Becker", "tom@example.com", None, {}),
    ("Hi Anna, please add Chris Doe chris@example.com 🙏", None, "Chris Doe", "chris@example.com", None, {}),
    ("Hola equipo, por favor añade a María López maria@example.es +34 912 345 678, ¡gracias!", None, "María López", "maria@example.es", "+34912345678", {}),
    ("Nuevo cliente: José Álvarez jose@example.es", None, "José Álvarez", "jose@example.es", None, {}),
    ("¿Puedes registrar a Lucía Fernández? lucia@example.es", None, "Lucía Fernández", "lucia@example.es", None, {}),
    ("María de la Cruz maria@example.mx, muchas gracias", None, "María de la Cruz", "maria@example.mx", None, {}),
    ("Oi pessoal, pode cadastrar o João Silva? joao@example.com.br +55 11 91234-5678 obrigado", None, "João Silva", "joao@example.com.br", "+5511912345678", {}),
    ("Novo contato: Ana Souza ana@example.com.br valeu!", None, "Ana Souza", "ana@example.com.br", None, {}),
    ("Bonjour, merci d'ajouter Jean Dupont jean@example.fr +33 1 23 45 67 89, merci !", None, "Jean Dupont", "jean@example.fr", "+33123456789", {}),
    ("Nouveau prospect : Amélie Poulain amelie@example.fr", None, "Amélie Poulain", "amelie@example.fr", None, {}),
    ("Peux-tu enregistrer Chloé Martin chloe@example.fr stp", None, "Chloé Martin", "chloe@example.fr", None, {}),
    ("Hallo zusammen! Bitte Max Mustermann max@example.de +49 30 1234567 anlegen, danke", None, "Max Mustermann", "max@example.de", "+49301234567", {}),
    ("Neuer Kunde: Jürgen Weiß juergen@example.de", None, "Jürgen Weiß", "juergen@example.de", None, {}),
    ("Kannst du Lena Schmidt hinzufügen? lena@example.de", None, "Lena Schmidt", "lena@example.de", None, {}),
    ("Ciao ragazzi, per favore aggiungi Giulia Bianchi giulia@example.it +39 06 1234 5678 grazie mille", None, "Giulia Bianchi", "giulia@example.it", "+390612345678", {}),
    ("Nuovo contatto: Marco Rossi marco@example.it", None, "Marco Rossi", "marco@example.it", None, {}),
    ("Hoi, graag Jan de Vries toevoegen: jan@example.nl", None, "Jan de Vries", "jan@example.nl", None, {}),
    ("Kun je Anna van der Berg toevoegen? anna@example.nl Bedankt!", None, "Anna van der Berg", "anna@example.nl", None, {}),
    ("Cześć, proszę dodaj Janusz Kowalski janusz@example.pl +48 22 123 45 67 dzięki", None, "Janusz Kowalski", "janusz@example.pl", "+48221234567", {}),
    ("Nowy klient: Zofia Wiśniewska zofia@example.pl", None, "Zofia Wiśniewska", "zofia@example.pl", None, {}),
    ("Привет! Пожалуйста, добавь Анна Иванова anna@example.ru +7 495 123-45-67 спасибо", None, "Анна Иванова", "anna@example.ru", "+74951234567", {}),
    ("Новый клиент: Иван Петров ivan@example.ru", None, "Иван Петров", "ivan@example.ru", None, {}),
    ("Merhaba, lütfen Ayşe Yılmaz ayse@example.com.tr +90 212 555 12 34 ekler misin? Teşekkürler", None, "Ayşe Yılmaz", "ayse@example.com.tr", "+902125551234", {}),
    ("Mehmet Öztürk'ü ekler misin? mehmet@example.com.tr", None, "Mehmet Öztürk", "mehmet@example.com.tr", None, {}),
    ("Yeni müşteri: Elif Demir elif@example.com.tr", None, "Elif Demir", "elif@example.com.tr", None, {}),
    ("مرحبا، من فضلك أضف محمد علي mohammed@example.ae شكرا", None, "محمد علي", "mohammed@example.ae", None, {}),
    ("عميل جديد: فاطمة الزهراء fatima@example.sa", None, "فاطمة الزهراء", "fatima@example.sa", None, {}),
    ("नमस्ते, कृपया राहुल शर्मा को जोड़ें rahul@example.in +91 98765 43210 धन्यवाद", None, "राहुल शर्मा", "rahul@example.in", "+919876543210", {}),
    ("नया ग्राहक: प्रिया पटेल priya@example.in", None, "प्रिया पटेल", "priya@example.in", None, {}),
    ("お疲れ様です。新規顧客：山田太郎 yamada@example.jp 03-1234-5678 よろしくお願いします", "JP", "山田太郎", "yamada@example.jp", "+81312345678", {}),
    ("山田花子さんを追加してください hanako@example.jp", None, "山田花子さん", "hanako@example.jp", None, {}),
    ("佐藤健 sato@example.jp ありがとうございます", None, "佐藤健", "sato@example.jp", None, {}),
    ("你好，请添加张伟 zhang@example.cn +86 10 1234 5678 谢谢", None, "张伟", "zhang@example.cn", "+861012345678", {}),
    ("新客户：李娜，lina@example.cn", None, "李娜", "lina@example.cn", None, {}),
    ("王芳 wang@example.cn 麻烦了", None, "王芳", "wang@example.cn", None, {}),
    ("안녕하세요, 김민수를 추가해 주세요 minsu@example.kr +82 2 1234 5678 감사합니다", None, "김민수", "minsu@example.kr", "+82212345678", {}),
    ("신규 고객: 박지민 jimin@example.kr", None, "박지민", "jimin@example.kr", None, {}),
    # ambiguous shapes: particles, one-word names, greetings that are names, no case
    ("add Ludwig van Beethoven ludwig@example.de", None, "Ludwig van Beethoven", "ludwig@example.de", None, {}),
    ("please add da Silva, Ana ana@example.com.br", None, "da Silva, Ana", "ana@example.com.br", None, {}),
    ("chris doe chris@example.com", None, "chris doe", "chris@example.com", None, {}),
    ("add Madonna madonna@example.com thanks", None, "Madonna", "madonna@example.com", None, {}),
    ("Ola Nordmann ola@example.no", None, "Ola Nordmann", "ola@example.no", None, {}),
    ("Selam Tesfaye selam@example.com", None, "Selam Tesfaye", "selam@example.com", None, {}),
    ("Ty Pennington ty@example.com", None, "Ty Pennington", "ty@example.com", None, {}),
    ("Hi Chris Doe, chris@example.com", None, "Chris Doe", "chris@example.com", None, {}),
    ("Dr. Chris Doe chris@example.com", None, "Dr. Chris Doe", "chris@example.com", None, {}),
    # a guest introducing themselves (a chat asking for the name)
    ("Hola, soy José García jose@example.es", None, "José García", "jose@example.es", None, {}),
    ("my name is Chris Doe", None, "Chris Doe", None, None, {}),
    ("Je m'appelle Amélie Poulain", None, "Amélie Poulain", None, None, {}),
    ("Ich heiße Max Mustermann", None, "Max Mustermann", None, None, {}),
    ("Меня зовут Анна Иванова", None, "Анна Иванова", None, None, {}),
    ("Benim adım Ayşe Yılmaz", None, "Ayşe Yılmaz", None, None, {}),
    ("اسمي محمد علي", None, "محمد علي", None, None, {}),
    ("मेरा नाम राहुल शर्मा है", None, "राहुल शर्मा", None, None, {}),
    ("私は山田太郎です", None, "山田太郎", None, None, {}),
    ("我叫张伟", None, "张伟", None, None, {}),
    ("저는 김민수입니다", None, "김민수", None, None, {}),
    ("Ben Smith ben@example.com", None, "Ben Smith", "ben@example.com", None, {}),
    ("please add", None, None, None, None, {}),
    ("thanks!", None, None, None, None, {}),
    # 2. 011 is a dialling prefix only where it is the region's (and 00, 010, 0011, 810 too)
    ("Amit Sharma 011 2495 4808 amit@example.in", "IN", "Amit Sharma", "amit@example.in", "+911124954808", {}),
    ("Marco Rossi 011 561 2345", "IT", "Marco Rossi", None, "+390115612345", {}),
    ("김민수 011-420-1305", "KR", "김민수", None, "+82114201305", {}),
    ("Sven Berg 011-96 21 30", "SE", "Sven Berg", None, "+4611962130", {}),
    ("Ana Souza 011 3456-7890", "BR", "Ana Souza", None, "+551134567890", {}),
    ("Chris Doe 011 44 20 7946 0958", "CA", "Chris Doe", None, UK, {}),
    ("Chris Doe 00 44 20 7946 0958", "GB", "Chris Doe", None, UK, {}),
    ("Chris Doe 010 44 20 7946 0958", "JP", "Chris Doe", None, UK, {}),
    ("Chris Doe 0011 44 20 7946 0958", "AU", "Chris Doe", None, UK, {}),
    ("Chris Doe 810 44 20 7946 0958", "RU", "Chris Doe", None, UK, {}),
    ("Chris Doe 011 44 20 7946 0958", "IN", "Chris Doe", None, None, {"phone": "is not a valid phone number"}),
    ("Amit Sharma 011 2495 4808", None, "Amit Sharma", None, None, {"phone": "011 2495 4808"}),
    # 3. invisible characters at the edges of a name
    ("\ufeffChris Doe chris@example.com", None, "Chris Doe", "chris@example.com", None, {}),
    ("Chris Doe\u200b chris@example.com", None, "Chris Doe", "chris@example.com", None, {}),
    ("\u200fمحمد علي\u200f mohammed@example.ae", None, "محمد علي", "mohammed@example.ae", None, {}),
    ("\u202bمحمد علي\u202c mohammed@example.ae", None, "محمد علي", "mohammed@example.ae", None, {}),
    ("\u2066Chris Doe\u2069 chris@example.com", None, "Chris Doe", "chris@example.com", None, {}),
    ("\u200bchris@example.com\u200b Chris Doe", None, "Chris Doe", "chris@example.com", None, {}),
    ("\u200f\u0645\u0647\u200c\u0633\u0627\u200f mahsa@example.ir", None, "\u0645\u0647\u200c\u0633\u0627", "mahsa@example.ir", None, {}),
    ("\ufeff张伟 zhang@example.cn", None, "张伟", "zhang@example.cn", None, {}),
    # 4. only symbols where the name is: said, not lost
    ("??? chris@example.com", None, None, "chris@example.com", None, {"name": "'???' is not a name"}),
    ("*** chris@example.com +1 415 555 2671", None, None, "chris@example.com", US, {"name": NAME_ERR}),
    ("#$% chris@example.com", None, None, "chris@example.com", None, {"name": "'#$%' is not a name"}),
    ('name="!!!" email=chris@example.com', None, None, "chris@example.com", None, {"name": "'!!!' is not a name"}),
    ("name: ??? email: chris@example.com", None, None, "chris@example.com", None, {"name": NAME_ERR}),
    ("？？？ zhang@example.cn", None, None, "zhang@example.cn", None, {"name": NAME_ERR}),
    ("chris@example.com - +1 415 555 2671", None, None, "chris@example.com", US, {}),
    ("👍 chris@example.com", None, None, "chris@example.com", None, {}),
    # 5. other keys are not fields (a URL with @ is not an email, a date is not a phone)
    ('name="Chris Doe" email=chris@example.com profile=https://mastodon.social/@chrisdoe', None, "Chris Doe", "chris@example.com", None, {}),
    ("name: Amelia Hughes, email: amelia@example.co.uk, web: https://medium.com/@ameliahughes", None, "Amelia Hughes", "amelia@example.co.uk", None, {}),
    ("Amelia Hughes amelia@example.co.uk https://medium.com/@ameliahughes", None, "Amelia Hughes", "amelia@example.co.uk", None, {}),
    ("Amelia Hughes amelia@example.co.uk medium.com/@ameliahughes", None, "Amelia Hughes", "amelia@example.co.uk", None, {}),
    ("name=Chris email=chris@example.com order=2024-11-05", None, "Chris", "chris@example.com", None, {}),
    ("Chris Doe chris@example.com booked=2024-11-05 +1 415 555 2671", None, "Chris Doe", "chris@example.com", US, {}),
    ("Chris Doe 2024-11-05 chris@example.com", None, "Chris Doe", "chris@example.com", None, {}),
    ("Chris Doe chris@example.com +1 415 555 2671 05.11.2024", None, "Chris Doe", "chris@example.com", US, {}),
    ("chris@example.com 10:30 Chris Doe", None, "Chris Doe", "chris@example.com", None, {}),
    ("Chris Doe chris@example.com +1 415 555 2671, call back at 14:30 on 12/11/2024", None, "Chris Doe", "chris@example.com", US, {}),
    ("nombre: María López, correo: maria@example.es, empresa: Acme", None, "María López", "maria@example.es", None, {}),
    ("Name: Max Mustermann\nE-Mail: max@example.de\nFirma: Beispiel GmbH\nTelefon: +49 30 1234567", None, "Max Mustermann", "max@example.de", "+49301234567", {}),
    ("名前：山田太郎\nメール：yamada@example.jp\n会社：株式会社サンプル", None, "山田太郎", "yamada@example.jp", None, {}),
    ("имя: Анна Иванова; почта: anna@example.ru; компания: Ромашка", None, "Анна Иванова", "anna@example.ru", None, {}),
    ("isim: Ayşe Yılmaz, e-posta: ayse@example.com.tr, şirket: Acme", None, "Ayşe Yılmaz", "ayse@example.com.tr", None, {}),
    ("姓名：张伟，邮箱：zhang@example.cn，公司：示例", None, "张伟", "zhang@example.cn", None, {}),
    ("이름: 김민수, 이메일: minsu@example.kr, 회사: 샘플", None, "김민수", "minsu@example.kr", None, {}),
    ("الاسم: محمد علي، البريد: mohammed@example.ae، الشركة: مثال", None, "محمد علي", "mohammed@example.ae", None, {}),
    # 6. inside a quoted value separators do not split; names as typed, brackets and all
    ("name=\"Robert'); DROP TABLE contacts;--\" email=bobby@example.com", None, "Robert'); DROP TABLE contacts;--", "bobby@example.com", None, {}),
    ('name="Doe; Chris" email=chris@example.com', None, "Doe; Chris", "chris@example.com", None, {}),
    ("<b>Eve</b> Mallory eve@example.com", None, "<b>Eve</b> Mallory", "eve@example.com", None, {}),
    ("<script>alert(1)</script> eve@example.com +1 415 555 2671", None, "<script>alert(1)</script>", "eve@example.com", US, {}),
    ("Irina Döring irina@example.de (04666)", None, "Irina Döring", "irina@example.de", None, {"phone": "'(04666)' is not a phone number"}),
    ("Irina Döring (04666) irina@example.de", None, "Irina Döring", "irina@example.de", None, {"phone": "'(04666)'"}),
    ("Zoë [Support] Quinn zoe@example.com", None, "Zoë [Support] Quinn", "zoe@example.com", None, {}),
    ('name: "Chris <Ops> Doe", email: chris@example.com', None, "Chris <Ops> Doe", "chris@example.com", None, {}),
    ("名前：「山田太郎」 yamada@example.jp", None, "山田太郎", "yamada@example.jp", None, {}),
    # 7. an invalid address is never repaired into another one
    (".lena@example.de Lena Schmidt", None, "Lena Schmidt", None, None, {"email": "'.lena@example.de' is not a valid email"}),
    ("Lena Schmidt lena.@example.de", None, "Lena Schmidt", None, None, {"email": "'lena.@example.de'"}),
    ("Lena Schmidt lena..schmidt@example.de", None, "Lena Schmidt", None, None, {"email": "'lena..schmidt@example.de'"}),
    ("Lena Schmidt lena@example..de", None, "Lena Schmidt", None, None, {"email": "'lena@example..de'"}),
    ("Lena Schmidt <.lena@example.de>", None, "Lena Schmidt", None, None, {"email": "'.lena@example.de'"}),
    ("Lena Schmidt x@lena@example.de", None, "Lena Schmidt", None, None, {"email": "'x@lena@example.de'"}),
    ("Lena Schmidt 'lena@example.de", None, "Lena Schmidt", "'lena@example.de", None, {}),
    ("Lena Schmidt lena@example.de.", None, "Lena Schmidt", "lena@example.de", None, {}),
    ("Lena Schmidt `lena@example.de`", None, "Lena Schmidt", "lena@example.de", None, {}),
    ("邮箱：.zhang@example.cn 张伟", None, "张伟", None, None, {"email": "'.zhang@example.cn'"}),
]
# fmt: on


@pytest.mark.parametrize(("text", "region", "name", "email", "phone", "errors"), CASES)
def test_extract_table(
    text: str,
    region: str | None,
    name: str | None,
    email: str | None,
    phone: str | None,
    errors: dict[str, str],
) -> None:
    got = extract_contact(text, region)
    assert (got.name, got.email, got.phone) == (name, email, phone)
    assert set(got.errors) == set(errors), got.errors
    for field, fragment in errors.items():
        assert fragment in got.errors[field]
    # Slack's links unwrapped; other <…> was typed and stays
    unwrapped = re.sub(r"<(?:[@#!]|mailto:|tel:|https?://)(?:[^<>|]*\|)?([^<>]*)>", r" \1 ", text)
    typed = " ".join(unwrapped.split())
    for field, raw in got.found.items():
        if "\n" not in text and "," not in raw and not got.warnings:
            assert raw in typed, field  # as typed (a name's spaces collapsed)


def test_minimum_table_size() -> None:
    assert len(CASES) >= 220


def test_extension_and_found_as_typed() -> None:
    got = extract_contact("Chris Doe, +1 (415) 555-2671 ext. 22")
    assert got.phone_extension == "22"
    assert got.found == {"name": CHRIS, "phone": "+1 (415) 555-2671 ext. 22"}


def test_fields_round_trip_through_validate_contact() -> None:
    got = extract_contact("Chris Doe, 00 44 20 7946 0958, chris@example.com")
    assert got.found["phone"] == "00 44 20 7946 0958"
    contact, warnings = validate_contact(got.fields())
    assert (contact.name, contact.email, contact.phone) == (CHRIS, MAIL, UK)
    assert warnings == {}


def test_fields_keep_national_numbers() -> None:
    got = extract_contact("Chris Doe 0113 496 0000", "GB")
    assert got.fields()["phone"] == "0113 496 0000"
    contact, _ = validate_contact({**got.fields(), "email": MAIL}, default_region="GB")
    assert contact.phone == got.phone


def test_conflict_keeps_first_value_for_prefill() -> None:
    got = extract_contact("Chris a@example.com b@example.com")
    assert got.email is None
    assert got.found["email"] == "a@example.com"


def test_no_name_from_email_local_part() -> None:
    got = extract_contact("chris.doe@example.com +1 415 555 2671")
    assert got.name is None
    assert "name" not in got.found
    assert "name" not in got.errors


def test_unknown_region_does_not_raise() -> None:
    got = extract_contact("Chris 415 555 2671", "ZZ")
    assert got.phone is None
    assert "phone" in got.errors


def test_cli_parse_reports_every_problem_at_once(tmp_path: Path) -> None:
    """``contact-adapter parse`` lists the missing email with the bad phone, not just one."""
    result = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "parse", "Chris +1 555"],
        cwd=tmp_path,
        env={**os.environ, "LOG_LEVEL": "WARNING", "CONTACT_REQUIRED_FIELDS": "name,email,phone"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "email: is required",
        "phone: '+1 555' is not a valid phone number",
    ]
    assert result.stdout == ""


def test_huge_input_does_not_raise() -> None:
    got = extract_contact("Chris Doe chris@example.com +1 415 555 2671 " * 500)
    assert got.email == MAIL
    assert got.phone == US


# --- properties ---------------------------------------------------------------------------

NAMES = ["Chris Doe", "José Álvarez", "O'Brien", "van der Berg", "张伟", "Анна", "محمد", "Ελένη"]
EMAILS = [
    "chris@example.com",
    "a.b+tag@example.co.uk",
    "bad@",
    "@x",
    "x@y@z.com",
    "josé@example.es",
]
PHONES = [
    "+1 415 555 2671",
    "+44 20 7946 0958",
    "00 44 20 7946 0958",
    "+1 555",
    "(415) 555-2671",
    "011 44 20 7946 0958",
    "+1 415 555 2671 ext. 9",
    "12",
]
AROUND = [  # what people type around the details, and other keys
    "please add",
    "new lead:",
    "Hola equipo,",
    "por favor añade a",
    "请添加",
    "thanks!",
    "Thx",
    "谢谢",
    "を追加してください",
    "ekler misin?",
    "(called yesterday)",
    "profile=https://mastodon.social/@chrisdoe",
    "web: https://medium.com/@a",
    "order=2024-11-05",
    "???",
    "#$%",
    ".lena@example.de",
    "011 2495 4808",
    "nombre:",
    "名前：",
    "company:",
]
SEPARATORS = [" ", ", ", "; ", " | ", "\n", " - "]
LABELS = ["", "name: ", "email: ", "tel: ", "phone=", "Mobile: ", 'name="', "mail "]

fragment = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(EMAILS),
    st.sampled_from(PHONES),
    st.sampled_from(LABELS),
    st.sampled_from(["payload", "token=", "&", "=", "🙂", "<", ">", "<mailto:", "|", '"', "“"]),
    st.sampled_from(
        ["<@U123|bob>", "<#C1|general>", "<!here>", "<https://acme.com|acme.com>", "*", "_", "~"]
    ),
    st.sampled_from(["\u200b", "\u202e", "\u200c", "\u200d", "\ufeff", "\u200f"]),
    st.sampled_from(AROUND),
    st.text(max_size=8),
)
composed = st.lists(st.tuples(fragment, st.sampled_from(SEPARATORS)), max_size=8).map(
    lambda parts: "".join(f + s for f, s in parts)
)
regions = st.sampled_from([None, "US", "GB", "de", "ZZ"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EMAIL_LABEL = re.compile(r"(e-?mail|mail)", re.IGNORECASE)
PHONE_LABEL = re.compile(r"(phone|tel|mobile|cell)", re.IGNORECASE)
# Names that re-read differently by design: label words, or ; | kept inside a quoted value.
LABEL_LIKE = re.compile(r"\b(name|e-?mail|mail|phone|tel|mobile|cell)\b|[;|]", re.IGNORECASE)


def _well_formed(got: Extraction) -> None:
    assert isinstance(got, Extraction)
    assert set(got.errors) <= {"name", "email", "phone"}
    for field in ("name", "email", "phone"):
        if getattr(got, field) is not None:
            assert field in got.found
            assert field not in got.errors
        if field in got.errors:
            assert field in got.found
    assert got.fields().keys() == got.found.keys()


@FAST
@given(st.text(), regions)
def test_never_raises_on_any_text(text: str, region: str | None) -> None:
    _well_formed(extract_contact(text, region))


@FAST
@given(composed, regions)
def test_never_raises_on_realistic_fragments(text: str, region: str | None) -> None:
    _well_formed(extract_contact(text, region))


@FAST
@given(st.one_of(st.text(), composed), regions)
def test_never_invents_fields(text: str, region: str | None) -> None:
    got = extract_contact(text, region)
    if "@" not in text:
        assert got.email is None
        if not EMAIL_LABEL.search(text):
            assert "email" not in got.found
            assert "email" not in got.errors
    if not any(ch.isdigit() for ch in text):
        assert got.phone is None
        if not PHONE_LABEL.search(text):
            assert "phone" not in got.found
            assert "phone" not in got.errors
    if not any(ch.isalnum() for ch in text):
        assert got.name is None
        if "name" in got.found:  # only symbols where the name would be: said, not dropped
            assert "is not a name" in got.errors["name"]
            assert got.found["name"] in text


@FAST
@given(composed, regions)
def test_extracting_a_rendered_result_again_changes_nothing(text: str, region: str | None) -> None:
    got = extract_contact(text, region)
    if got.errors or (got.name and LABEL_LIKE.search(got.name)):
        return
    phone = f"{got.phone} ext. {got.phone_extension}" if got.phone_extension else got.phone
    rendered = " ".join(v for v in (got.name, got.email, phone) if v)
    again = extract_contact(rendered, region)
    assert (again.name, again.email, again.phone, again.phone_extension, again.errors) == (
        got.name,
        got.email,
        got.phone,
        got.phone_extension,
        {},
    )


# --- what is ignored, and the regions' own dialling prefixes --------------------------------


def test_other_keys_are_ignored_and_listed_in_a_warning() -> None:
    got = extract_contact(
        'name="Chris Doe" email=chris@example.com profile=https://mastodon.social/@chrisdoe '
        "order=2024-11-05 +1 415 555 2671"
    )
    assert (got.name, got.email, got.phone, got.errors) == (CHRIS, MAIL, US, {})
    assert got.warnings == {
        "ignored": "not read: profile, order (only the name, email and phone are)"
    }
    assert set(got.found) == {"name", "email", "phone"}
    contact, errors = got.check(required=("name", "email", "phone"), default_region=None)
    assert errors == {}  # a warning never stops a registration
    assert contact is not None and contact.phone == US


def test_keyed_form_in_another_language_warns_about_its_other_keys() -> None:
    got = extract_contact("Name: Max Mustermann\nE-Mail: max@example.de\nFirma: Beispiel GmbH")
    assert (got.name, got.email) == ("Max Mustermann", "max@example.de")
    assert got.warnings == {"ignored": "not read: Firma (only the name, email and phone are)"}


def test_no_warning_when_every_key_is_a_field() -> None:
    got = extract_contact("please add name=Chris email=chris@example.com, thanks!")
    assert (got.name, got.email, got.warnings) == ("Chris", MAIL, {})


@pytest.mark.parametrize(
    ("text", "region", "e164"),
    [
        ("011 2495 4808", "IN", "+911124954808"),
        ("011 561 2345", "IT", "+390115612345"),
        ("011-420-1305", "KR", "+82114201305"),
        ("011-96 21 30", "SE", "+4611962130"),
    ],
)
def test_a_national_011_number_is_registered_in_its_region(
    text: str, region: str, e164: str
) -> None:
    got = extract_contact(f"Chris Doe {text} chris@example.com", region)
    assert got.fields()["phone"] == text  # as typed: 011 is not a prefix there
    contact, errors = got.check(required=("name", "email", "phone"), default_region=region)
    assert errors == {}
    assert contact is not None and contact.phone == e164


@pytest.mark.parametrize("region", [None, "US", "CA"])
def test_011_is_the_dialling_prefix_of_north_america(region: str | None) -> None:
    got = extract_contact("Chris Doe 011 44 20 7946 0958", region)
    assert got.phone == UK
    assert got.fields()["phone"] == "+44 20 7946 0958"


def test_symbols_for_a_name_are_reported_rather_than_missing() -> None:
    got = extract_contact("??? chris@example.com +1 415 555 2671")
    _, errors = got.check(required=("name", "email"), default_region=None)
    assert errors == {"name": "'???' is not a name: give the guest's name"}
