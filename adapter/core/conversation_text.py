"""What the messenger bots say, in English, Spanish, Portuguese, French, German and Russian.

:func:`render` fills a message's ``{name}`` / ``{value}`` with what the guest gave; a
language we do not have falls back to English, and so does a key missing in one language
(``tests/test_conversation.py`` checks that none is). Plain text: Telegram and WhatsApp
send it as typed, so nothing here needs escaping.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LANGUAGES", "MESSAGES", "render"]

LANGUAGES = ("en", "es", "pt", "fr", "de", "ru")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "welcome": "Hello! I will pass your contact details to our team.",
        "help": "I register your name, phone number and e-mail address with our team. "
        "Send /cancel to stop and delete what you sent me.",
        "ask_name": "What is your full name?",
        "ask_phone": "What is your phone number, with the country code (e.g. +1 415 555 2671)?",
        "ask_phone_button": "Please share your phone number with the button below "
        "(or type it with the country code).",
        "ask_email": "What is your e-mail address?",
        "share_button": "Share my phone number",
        "bad_name": "“{value}” is not a name I can use.",
        "bad_email": "“{value}” is not an e-mail address I can use.",
        "bad_phone": "“{value}” is not a valid phone number.",
        "not_understood": "Sorry, I did not understand that.",
        "not_own_card": "That contact card is not yours: please share your own number "
        "with the button.",
        "registering": "Thank you, {name}! We are registering your details.",
        "cancelled": "Done: I have deleted what you sent me. Write again whenever you like.",
        "delivered": "{name}, you are now registered with our team. Thank you!",
        "failed": "Sorry, {name}: we could not register your details. "
        "Please write to us again later.",
    },
    "es": {
        "welcome": "¡Hola! Pasaré tus datos de contacto a nuestro equipo.",
        "help": "Registro tu nombre, tu teléfono y tu correo electrónico con nuestro equipo. "
        "Envía /cancel para parar y borrar lo que me enviaste.",
        "ask_name": "¿Cuál es tu nombre completo?",
        "ask_phone": "¿Cuál es tu número de teléfono, con el prefijo del país "
        "(p. ej. +34 612 34 56 78)?",
        "ask_phone_button": "Comparte tu número de teléfono con el botón de abajo "
        "(o escríbelo con el prefijo del país).",
        "ask_email": "¿Cuál es tu correo electrónico?",
        "share_button": "Compartir mi número de teléfono",
        "bad_name": "«{value}» no es un nombre que pueda usar.",
        "bad_email": "«{value}» no es un correo electrónico que pueda usar.",
        "bad_phone": "«{value}» no es un número de teléfono válido.",
        "not_understood": "Perdona, no lo he entendido.",
        "not_own_card": "Esa tarjeta de contacto no es tuya: comparte tu propio número "
        "con el botón.",
        "registering": "¡Gracias, {name}! Estamos registrando tus datos.",
        "cancelled": "Hecho: he borrado lo que me enviaste. Escríbeme cuando quieras.",
        "delivered": "{name}, ya estás registrado con nuestro equipo. ¡Gracias!",
        "failed": "Lo siento, {name}: no hemos podido registrar tus datos. "
        "Vuelve a escribirnos más tarde.",
    },
    "pt": {
        "welcome": "Olá! Vou passar os seus dados de contato para a nossa equipe.",
        "help": "Registro o seu nome, telefone e e-mail com a nossa equipe. "
        "Envie /cancel para parar e apagar o que você me enviou.",
        "ask_name": "Qual é o seu nome completo?",
        "ask_phone": "Qual é o seu número de telefone, com o código do país "
        "(ex.: +55 11 91234 5678)?",
        "ask_phone_button": "Compartilhe o seu número de telefone com o botão abaixo "
        "(ou digite-o com o código do país).",
        "ask_email": "Qual é o seu e-mail?",
        "share_button": "Compartilhar meu número de telefone",
        "bad_name": "“{value}” não é um nome que eu possa usar.",
        "bad_email": "“{value}” não é um e-mail que eu possa usar.",
        "bad_phone": "“{value}” não é um número de telefone válido.",
        "not_understood": "Desculpe, não entendi.",
        "not_own_card": "Esse cartão de contato não é seu: compartilhe o seu próprio número "
        "com o botão.",
        "registering": "Obrigado, {name}! Estamos registrando os seus dados.",
        "cancelled": "Pronto: apaguei o que você me enviou. Escreva quando quiser.",
        "delivered": "{name}, você já está registrado com a nossa equipe. Obrigado!",
        "failed": "Desculpe, {name}: não conseguimos registrar os seus dados. "
        "Escreva-nos novamente mais tarde.",
    },
    "fr": {
        "welcome": "Bonjour ! Je vais transmettre vos coordonnées à notre équipe.",
        "help": "J’enregistre votre nom, votre numéro de téléphone et votre adresse e-mail "
        "auprès de notre équipe. Envoyez /cancel pour arrêter et effacer ce que vous "
        "m’avez envoyé.",
        "ask_name": "Quel est votre nom complet ?",
        "ask_phone": "Quel est votre numéro de téléphone, avec l’indicatif du pays "
        "(par ex. +33 6 12 34 56 78) ?",
        "ask_phone_button": "Partagez votre numéro de téléphone avec le bouton ci-dessous "
        "(ou tapez-le avec l’indicatif du pays).",
        "ask_email": "Quelle est votre adresse e-mail ?",
        "share_button": "Partager mon numéro de téléphone",
        "bad_name": "« {value} » n’est pas un nom que je peux utiliser.",
        "bad_email": "« {value} » n’est pas une adresse e-mail que je peux utiliser.",
        "bad_phone": "« {value} » n’est pas un numéro de téléphone valide.",
        "not_understood": "Désolé, je n’ai pas compris.",
        "not_own_card": "Cette fiche de contact n’est pas la vôtre : partagez votre propre "
        "numéro avec le bouton.",
        "registering": "Merci, {name} ! Nous enregistrons vos coordonnées.",
        "cancelled": "C’est fait : j’ai effacé ce que vous m’avez envoyé. "
        "Écrivez-moi quand vous voulez.",
        "delivered": "{name}, vous êtes maintenant enregistré auprès de notre équipe. Merci !",
        "failed": "Désolé, {name} : nous n’avons pas pu enregistrer vos coordonnées. "
        "Écrivez-nous de nouveau plus tard.",
    },
    "de": {
        "welcome": "Hallo! Ich gebe Ihre Kontaktdaten an unser Team weiter.",
        "help": "Ich registriere Ihren Namen, Ihre Telefonnummer und Ihre E-Mail-Adresse "
        "bei unserem Team. Senden Sie /cancel, um abzubrechen und alles zu löschen, "
        "was Sie mir geschickt haben.",
        "ask_name": "Wie lautet Ihr vollständiger Name?",
        "ask_phone": "Wie lautet Ihre Telefonnummer, mit Landesvorwahl (z. B. +49 151 23456789)?",
        "ask_phone_button": "Bitte teilen Sie Ihre Telefonnummer mit der Schaltfläche unten "
        "(oder tippen Sie sie mit Landesvorwahl ein).",
        "ask_email": "Wie lautet Ihre E-Mail-Adresse?",
        "share_button": "Meine Telefonnummer teilen",
        "bad_name": "„{value}“ ist kein Name, den ich verwenden kann.",
        "bad_email": "„{value}“ ist keine E-Mail-Adresse, die ich verwenden kann.",
        "bad_phone": "„{value}“ ist keine gültige Telefonnummer.",
        "not_understood": "Entschuldigung, das habe ich nicht verstanden.",
        "not_own_card": "Diese Kontaktkarte ist nicht Ihre eigene: Bitte teilen Sie Ihre "
        "eigene Nummer mit der Schaltfläche.",
        "registering": "Danke, {name}! Wir registrieren Ihre Daten.",
        "cancelled": "Erledigt: Ich habe gelöscht, was Sie mir geschickt haben. "
        "Schreiben Sie jederzeit wieder.",
        "delivered": "{name}, Sie sind jetzt bei unserem Team registriert. Vielen Dank!",
        "failed": "Entschuldigung, {name}: Wir konnten Ihre Daten nicht registrieren. "
        "Bitte schreiben Sie uns später noch einmal.",
    },
    "ru": {
        "welcome": "Здравствуйте! Я передам ваши контактные данные нашей команде.",
        "help": "Я регистрирую ваше имя, номер телефона и адрес электронной почты у нашей "
        "команды. Отправьте /cancel, чтобы остановиться и удалить то, что вы прислали.",
        "ask_name": "Как вас зовут (имя и фамилия)?",
        "ask_phone": "Какой у вас номер телефона, с кодом страны (например, +7 912 345 67 89)?",
        "ask_phone_button": "Поделитесь своим номером телефона кнопкой ниже "
        "(или введите его с кодом страны).",
        "ask_email": "Какой у вас адрес электронной почты?",
        "share_button": "Поделиться номером телефона",
        "bad_name": "«{value}» — не имя, которое я могу использовать.",
        "bad_email": "«{value}» — не адрес электронной почты, который я могу использовать.",
        "bad_phone": "«{value}» — неверный номер телефона.",
        "not_understood": "Извините, я не понял.",
        "not_own_card": "Это не ваша контактная карточка: поделитесь своим номером кнопкой.",
        "registering": "Спасибо, {name}! Мы регистрируем ваши данные.",
        "cancelled": "Готово: я удалил то, что вы прислали. Пишите в любое время.",
        "delivered": "{name}, вы зарегистрированы у нашей команды. Спасибо!",
        "failed": "Извините, {name}: нам не удалось зарегистрировать ваши данные. "
        "Напишите нам позже.",
    },
}


def render(key: str, language: str, values: Mapping[str, str] | None = None) -> str:
    """The message ``key`` in ``language`` (else English) with ``values`` filled in."""
    template = MESSAGES.get(language, {}).get(key) or MESSAGES["en"][key]
    given = dict(values or {})
    return template.format_map({"name": given.get("name", ""), "value": given.get("value", "")})
