"""The words people type around contact details, in many languages, as compiled patterns.

Pure data for :mod:`adapter.core.extract`: field labels (``name:``, ``correo:``, ``電話：`` …),
lead-ins (greetings, requests such as ``please add`` / ``por favor añade`` / ``请添加``, and
``new lead``-like nouns) and closings (``thanks``, ``merci``, ``спасибо``, ``よろしくお願いします``
and verbs that come last, like German ``anlegen`` or Korean ``추가해 주세요``). Each list is
written once per language, ``|``-separated; spaces in a phrase match any run of spaces,
and every phrase also matches decomposed (NFD) and, for Devanagari, precomposed nukta spellings.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = ["BARE_LABEL_BEFORE", "CLOSING", "LABEL", "LEAD_IN", "is_caseless"]

# --- field labels ------------------------------------------------------------------------

NAME_LABELS = (
    "full name|fullname|full_name|name|contact name|nombre|nombre completo|nome|nome completo"
    "|nom|nom complet|naam|volledige naam|imię i nazwisko|imie i nazwisko|imię|imie|имя|фио"
    "|ad soyad|adı soyadı|isim|ad|الاسم|اسم|नाम|पूरा नाम|名前|お名前|氏名|姓名|名字|이름|성명"
)
EMAIL_LABELS = (
    "e-mail address|email address|e-mail|email|e_mail|mailto|mail|correo electrónico"
    "|correo electronico|correo|courriel|adresse e-mail|adresse mail|e-mail-adresse|mailadresse"
    "|indirizzo email|indirizzo e-mail|posta elettronica|e-posta|eposta|электронная почта"
    "|эл. почта|почта|емейл|имейл|البريد الإلكتروني|البريد|بريد|ईमेल|メールアドレス|メール"
    "|电子邮件|电子邮箱|邮箱|郵箱|邮件|이메일|메일"
)
PHONE_LABELS = (
    "phone number|phone|telephone|tel|mobile|cell|whatsapp|teléfono|telefono|móvil|movil"
    "|celular|telefone|téléphone|portable|telefon|handy|mobil|telefoonnummer|telefoon|mobiel"
    "|cellulare|numero di telefono|komórka|komorka|nr tel|телефон|тел|моб|cep|gsm|هاتف|الهاتف"
    "|جوال|موبايل|फ़ोन|फोन|मोबाइल|電話番号|電話|携帯|電話號碼|电话号码|电话|手机|手機|전화번호"
    "|전화|휴대폰|핸드폰"
)

# --- lead-ins: what comes before the details ------------------------------------------------

GREETINGS = {  # stripped at the start of the text
    "en": "hi|hello|hey|hiya|howdy|good morning|good afternoon|good evening|greetings|dear",
    "es": "hola|buenos días|buenos dias|buenas tardes|buenas noches|buenas|qué tal",
    "pt": "olá|oi|bom dia|boa tarde|boa noite",
    "fr": "bonjour|bonsoir|salut|coucou",
    "de": "hallo|guten morgen|guten tag|guten abend|moin|servus|grüß gott|grüezi",
    "it": "ciao|buongiorno|buonasera",
    "nl": "hoi|goedemorgen|goedemiddag|goedenavond|hallo allemaal",
    "pl": "cześć|czesc|dzień dobry|dzien dobry|witam|witajcie|hej",
    "ru": "привет|здравствуйте|здравствуй|добрый день|доброе утро|добрый вечер",
    "tr": "merhaba|merhabalar|günaydın|iyi günler|iyi akşamlar",
    "ar": "مرحبا|مرحباً|أهلا|اهلا|السلام عليكم|صباح الخير|مساء الخير",
    "hi": "नमस्ते|नमस्कार|हैलो|हाय|namaste",
    "ja": "こんにちは|こんばんは|おはようございます|お疲れ様です|お疲れさまです|お世話になっております",
    "zh": "你好|您好|大家好|早上好|嗨",
    "ko": "안녕하세요|안녕",
}
# Greetings that are also given names (Ola, Selam, Dag, Salve): a greeting only when
# punctuation follows ("Selam, …"), so "Ola Nordmann ola@example.no" keeps its name.
SOFT_GREETINGS = "ola|selam|selamlar|dag|salve|aloha"
ADDRESSEES = {  # only right after a greeting: "hi team", "hola equipo", "hallo zusammen"
    "en": "team|all|everyone|everybody|guys|folks|there|y'all|sales|support",
    "es": "equipo|chicos|chicas|a todos|todos",
    "pt": "equipe|pessoal|galera|time|todos",
    "fr": "l'équipe|équipe|tout le monde|à tous|tous",
    "de": "zusammen|alle|leute|ihr",
    "it": "ragazzi|a tutti|tutti",
    "nl": "allemaal|iedereen|allen",
    "pl": "zespole|wszystkim|wszyscy",
    "ru": "коллеги|команда|всем|ребята",
    "tr": "ekip|arkadaşlar|herkese",
    "ar": "يا فريق|فريق|الجميع|يا جماعة",
    "hi": "टीम|सभी|दोस्तों",
    "ja": "皆さん|皆様|みなさん|チーム",
    "zh": "大家|各位|团队",
    "ko": "팀|여러분|모두",
}
REQUESTS = {  # asking for it: always a lead-in at the start
    "en": "please|pls|plz|kindly|could you please|could you|can you please|can you|would you"
    "|could u|can u|pls can you|add|register|create|save|enter|log|record|put in|input|note"
    "|here is|here's|heres|this is|fyi|add to rocket.chat|add to the crm|add to crm",
    "es": "por favor|porfa|porfavor|favor de|puedes|podrías|podrias|puede|podría|podria"
    "|podrían|me ayudas|añade a|añade|añadir a|añadir|agrega a|agrega|agregar a|agregar"
    "|agregá a|agregá|registra a|registra|registrar a|registrar|crea|crear|guarda|guardar"
    "|da de alta a|da de alta|dar de alta a|dar de alta|apunta a|apunta|anota a|anota",
    "pt": "por favor|pfv|pode|podes|poderia|consegue|você pode|voce pode|adiciona o|adiciona a"
    "|adiciona|adicione o|adicione a|adicione|adicionar|cadastra o|cadastra a|cadastra"
    "|cadastre o|cadastre a|cadastre|cadastrar|registra o|registra a|registre|registrar"
    "|cria|crie|salva|salve|inclui|inclua|incluir",
    "fr": "s'il te plaît|s'il vous plaît|s'il te plait|s'il vous plait|stp|svp|merci de"
    "|merci d'|peux-tu|pouvez-vous|tu peux|vous pouvez|pourrais-tu|pourriez-vous|ajoute"
    "|ajoutez|ajouter|enregistre|enregistrez|enregistrer|crée|créez|créer|inscris|inscrivez",
    "de": "bitte|kannst du bitte|kannst du|könntest du|können sie|könnten sie|füge bitte|füge"
    "|füg|lege bitte|lege|leg|trage bitte|trage|trag|bitte anlegen|bitte hinzufügen"
    "|bitte eintragen|anlegen|hinzufügen|eintragen|erfassen|speichern",
    "it": "per favore|per piacere|perfavore|puoi|potresti|può|potrebbe|aggiungi|aggiungere"
    "|aggiunga|registra|registrare|inserisci|inserire|crea|salva",
    "nl": "graag|alsjeblieft|alstublieft|aub|a.u.b.|kun je|kan je|kunt u|wil je|zou je"
    "|voeg toe|voeg|toevoegen|registreer|maak aan|maak|zet|sla op",
    "pl": "proszę|prosze|poproszę|czy możesz|czy mozesz|możesz|mozesz|czy możecie|możecie"
    "|dodaj|dodajcie|dodać|zarejestruj|zapisz|wpisz|utwórz|stwórz",
    "ru": "пожалуйста|пж|плиз|можешь|можете|не мог бы ты|не могли бы вы|добавь|добавьте"
    "|добавить|занеси|занесите|внеси|внесите|запиши|запишите|зарегистрируй"
    "|зарегистрируйте|создай|создайте|сохрани",
    "tr": "lütfen|lutfen|rica etsem|ekle|ekler misin|ekleyebilir misin|ekleyin|kaydet"
    "|kaydeder misin|oluştur",
    "ar": "من فضلك|من فضلكم|لو سمحت|لو سمحتم|الرجاء|رجاء|رجاءً|يرجى|أضف|اضف|أضيفي|اضيفي"
    "|أضيفوا|سجل|سجّل|أنشئ",
    "hi": "कृपया|प्लीज़|प्लीज|ज़रा|जोड़ें|जोड़ दें|जोड़ो|जोड़ दो|जोड़ दीजिए|जोड़िए|दर्ज करें|kripya|kripaya",
    "ja": "以下を追加してください|以下を登録してください|追加してください|登録してください"
    "|追加お願いします|登録お願いします|追加をお願いします|登録をお願いします|以下",
    "zh": "请帮我添加|请帮忙添加|请添加|请新增|请登记|请录入|麻烦添加|麻烦你|麻烦|请帮我|请帮忙"
    "|帮我添加|帮忙添加|帮我|请|請|添加|新增|登记|登記|录入|加一下",
    "ko": "다음 분을 추가해 주세요|추가해 주세요|등록해 주세요|추가 부탁드립니다|등록 부탁드립니다",
}
# A guest introducing themselves, e.g. when a chat asks for their name ("me llamo José").
INTRODUCTIONS = (
    "my name is|my name's|i am|i'm|me llamo|mi nombre es|meu nome é|me chamo|je m'appelle"
    "|je suis|ich heiße|ich heisse|mein name ist|ich bin|mi chiamo|il mio nome è|mijn naam is"
    "|soy|sou|ik ben|nazywam się|mam na imię|jestem|меня зовут|моё имя|мое имя|benim adım|adım|اسمي"
    "|أنا|मेरा नाम|मैं|私は|わたしは|我叫|我是|我的名字是|제 이름은|저는"
)
NOUNS = {  # what is being added: a lead-in after a request, or before ':' / '-'
    "en": "new lead|new contact|new customer|new client|new prospect|a new lead"
    "|a new contact|this lead|this contact|this person|the following|following|lead|contact"
    "|customer|client|prospect|guest|visitor|details|contact details|info|new",
    "es": "nuevo contacto|nuevo cliente|nueva clienta|nuevo lead|un nuevo contacto|este contacto"
    "|contacto|cliente|clienta|prospecto|lead|datos|el siguiente|la siguiente",
    "pt": "novo contato|novo contacto|novo cliente|nova cliente|novo lead|um novo contato"
    "|este contato|contato|contacto|cliente|lead|dados|o seguinte|a seguinte",
    "fr": "nouveau contact|nouveau client|nouvelle cliente|nouveau prospect|nouveau lead"
    "|un nouveau contact|ce contact|contact|client|cliente|prospect|lead|coordonnées",
    "de": "neuer kontakt|neuen kontakt|neuer kunde|neuen kunden|neue kundin|neuer lead"
    "|neuen lead|neuer interessent|kontakt|kunde|kundin|lead|interessent|interessentin"
    "|ansprechpartner|folgenden kontakt|folgende",
    "it": "nuovo contatto|nuovo cliente|nuova cliente|nuovo lead|questo contatto|contatto"
    "|cliente|lead|dati",
    "nl": "nieuw contact|nieuwe klant|nieuwe lead|nieuwe relatie|dit contact|contact|klant"
    "|lead|contactpersoon|relatie|gegevens",
    "pl": "nowy kontakt|nowego klienta|nowy klient|nową klientkę|nowy lead|kontakt|klienta"
    "|klient|klientkę|lead|dane",
    "ru": "новый контакт|нового клиента|новый клиент|новую клиентку|новый лид|контакт|клиента"
    "|клиент|лида|лид|данные",
    "tr": "yeni kişi|yeni kisi|yeni müşteri|yeni musteri|yeni lead|yeni kontak|kişi|müşteri"
    "|musteri|lead|kontak|bilgiler",
    "ar": "عميل جديد|عميلة جديدة|جهة اتصال جديدة|جهة اتصال|عميل|عميلة|العميل|بيانات",
    "hi": "नया संपर्क|नया ग्राहक|नई ग्राहक|संपर्क|ग्राहक|नया लीड",
    "ja": "新規顧客|新規リード|新規連絡先|新しい連絡先|新しい顧客|新規のお客様|お客様|顧客|連絡先|新規",
    "zh": "新客户|新客戶|新联系人|新聯絡人|新线索|客户|客戶|联系人|聯絡人|一下|以下",
    "ko": "신규 고객|새 고객|새 연락처|신규 연락처|고객|연락처|신규|다음 분",
}

# An article after a request ("añade a María", "cadastrar o João", "aggiungi la Rossi"):
# a lead-in only right after one, and only in lower case ("add La Toya …" keeps "La").
PARTICLES = "a|al|o|os|as|el|la|le|il|lo|los|las"

# --- closings: what comes after the name ----------------------------------------------------

COURTESIES = {
    "en": "thanks|thank you|thanks a lot|thanks so much|many thanks|thanks in advance|thx"
    "|thnx|thnks|tnx|tks|cheers|tia|appreciated|much appreciated|please|pls|plz|regards"
    "|kind regards|best regards|best wishes|have a nice day|asap",
    "es": "gracias|muchas gracias|mil gracias|gracias de antemano|saludos|un saludo|por favor"
    "|porfa|porfis|xfa",
    "pt": "obrigado|obrigada|obg|brigado|valeu|vlw|muito obrigado|muito obrigada|abraço"
    "|abraços|abs|por favor|pfv|grato|grata",
    "fr": "merci|merci beaucoup|merci d'avance|cordialement|bonne journée|bisous|stp|svp"
    "|s'il te plaît|s'il vous plaît|s'il te plait|s'il vous plait",
    "de": "danke|danke schön|dankeschön|vielen dank|danke dir|danke euch|lg|vg|mfg"
    "|liebe grüße|viele grüße|grüße|gruß|bitte|hinzu|bitte anlegen|anlegen|hinzufügen"
    "|eintragen|erfassen|speichern|aufnehmen",
    "it": "grazie|grazie mille|grazie in anticipo|saluti|cordiali saluti|per favore"
    "|per piacere|a presto",
    "nl": "bedankt|dank je|dank je wel|dankjewel|dank u|dank u wel|dankuwel|alvast bedankt"
    "|groetjes|groeten|graag|aub|alsjeblieft|alstublieft|toevoegen|toe|aanmaken|invoeren"
    "|opslaan",
    "pl": "dzięki|dzieki|dziękuję|dziekuje|dziękuje|z góry dziękuję|pozdrawiam|pozdro|proszę"
    "|prosze",
    "ru": "спасибо|спасибо большое|большое спасибо|спс|благодарю|заранее спасибо|пожалуйста"
    "|пж|с уважением",
    "tr": "teşekkürler|teşekkür ederim|tesekkurler|tşk|tşkler|sağ ol|sağol|saol|eyvallah"
    "|lütfen|lutfen|kolay gelsin|iyi çalışmalar",
    "ar": "شكرا|شكراً|شكرًا|شكرا جزيلا|مشكور|مشكورة|جزاك الله خيرا|من فضلك|لو سمحت|تحياتي|مع الشكر",
    "hi": "धन्यवाद|शुक्रिया|कृपया|थैंक्स|dhanyavad|dhanyavaad|shukriya|add kar do|add kardo"
    "|add karo|add kar dijiye|save kar do",
    "ja": "ありがとうございます|ありがとうございました|ありがとう|よろしくお願いします"
    "|よろしくお願いいたします|よろしくお願い致します|よろしく|お願いします|お願いいたします"
    "|以上です|以上",
    "zh": "谢谢你|谢谢|謝謝|谢啦|谢了|多谢|感谢|麻烦了|麻烦你了|辛苦了|拜托了|拜托",
    "ko": "감사합니다|고맙습니다|감사해요|고마워요|부탁드립니다|부탁드려요|부탁해요"
    "|잘 부탁드립니다|입니다|이에요|예요",
    "intro": "です|と申します|といいます|है|हूँ|हूं",  # 山田太郎です, 山田と申します
}
# Verbs that come last, with the particle that ties them to the name (written attached).
TURKISH_VERBS = (
    "ekler misin|ekler misiniz|ekleyebilir misin|ekleyebilir misiniz|ekleyin|ekleyiniz|ekle"
    "|kaydeder misin|kaydedin|kaydet"
)
HINDI_VERBS = "को जोड़ें|को जोड़ दें|को जोड़ दो|को जोड़ो|को जोड़ दीजिए|को जोड़िए|को दर्ज करें|को सेव करें"
JAPANESE_VERBS = (
    "を追加してください|を登録してください|を追加して下さい|を登録して下さい|を追加お願いします"
    "|を登録お願いします|を追加して|を登録して|の追加をお願いします|の登録をお願いします"
    "|追加してください|登録してください|追加お願いします|登録お願いします"
)
CHINESE_VERBS = "添加一下|加一下|登记一下|录入一下|添加|登记"
KOREAN_VERBS = (
    "추가해 주세요|추가해주세요|등록해 주세요|등록해주세요|저장해 주세요|추가해 줘|추가해줘"
    "|추가 부탁드립니다|등록 부탁드립니다|추가 바랍니다|등록 바랍니다"
)

_NUKTA = {
    "\u0915\u093c": "\u0958",
    "\u0921\u093c": "\u095c",
    "\u0922\u093c": "\u095d",
    "\u091c\u093c": "\u095b",
    "\u092b\u093c": "\u095e",
}


def is_caseless(ch: str) -> bool:
    """True for Han, kana and Hangul: words run on without spaces around them."""
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x9FFF  # CJK ideographs
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF
    )


def _spellings(word: str) -> set[str]:
    nfc = unicodedata.normalize("NFC", word)
    out = {nfc, unicodedata.normalize("NFD", word)}
    composed = nfc
    for pair, single in _NUKTA.items():
        composed = composed.replace(pair, single)
    out.add(composed)
    return out


def _phrase(word: str, *, tail_boundary: bool, head_boundary: bool) -> str:
    body = re.escape(word).replace(r"\ ", r"\s+").replace("'", "['’]")
    head = r"(?<!\w)" if head_boundary and not is_caseless(word[0]) else ""
    tail = r"(?!\w)" if tail_boundary and not is_caseless(word[-1]) and word[-1] != "'" else ""
    return head + body + tail


def _alternation(groups: Iterable[str], *, head: bool = False, tail: bool = True) -> str:
    words = {s for group in groups for w in group.split("|") if w for s in _spellings(w)}
    ordered = sorted(words, key=lambda w: (-len(w), w))
    return "|".join(_phrase(w, tail_boundary=tail, head_boundary=head) for w in ordered)


_FIELD_WORDS = {"name": NAME_LABELS, "email": EMAIL_LABELS, "phone": PHONE_LABELS}
LABEL = re.compile(
    r"(?<![^\s,;|，；、،؛])(?:"
    + "|".join(f"(?P<{field}>{_alternation([words])})" for field, words in _FIELD_WORDS.items())
    + r")[ \t]*[:=：][ \t]*",
    re.IGNORECASE,
)
BARE_LABEL_BEFORE = {
    field: re.compile(
        r"(?<![^\s,;|，；、،؛])(?:" + _alternation([_FIELD_WORDS[field]]) + r")[ \t]*$",
        re.IGNORECASE,
    )
    for field in ("email", "phone")
}
LEAD_IN = re.compile(
    f"(?P<greeting>{_alternation(GREETINGS.values())})"
    f"|(?P<soft>{_alternation([SOFT_GREETINGS])})"
    f"|(?P<request>{_alternation([*REQUESTS.values(), INTRODUCTIONS])})"
    f"|(?P<noun>{_alternation(NOUNS.values())})"
    f"|(?P<addressee>{_alternation(ADDRESSEES.values())})"
    f"|(?P<particle>{_alternation([PARTICLES])})",
    re.IGNORECASE,
)
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d"
CLOSING = re.compile(
    "(?:"
    + _alternation(COURTESIES.values(), head=True)
    + r"|(?<=\w)['’]y?[ıiuü]\s+(?:"  # Turkish: the accusative ending goes with the verb
    + _alternation([TURKISH_VERBS])
    + r")|(?<!\w)(?:"
    + _alternation([TURKISH_VERBS])
    + r")|\s*(?:"
    + _alternation([HINDI_VERBS, JAPANESE_VERBS, CHINESE_VERBS])
    + r")|(?<=\S)(?:을|를|님을|님를)?\s*(?:"
    + _alternation([KOREAN_VERBS])
    + f"))[\\s!！.。?？,，、~…{_EMOJI}]*\\Z|[{_EMOJI}]+[\\s!！.。]*\\Z",
    re.IGNORECASE,
)
