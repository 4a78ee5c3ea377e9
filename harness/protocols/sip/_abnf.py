"""RFC 3261 section 25 grammar, as regexes (the h11 `_abnf.py` habit): each name is the RFC's rule.

Only what the MESSAGE subset needs is here; header values vtlab does not interpret are kept as text.
Line folding (`LWS` with CRLF) is removed before these apply (RFC 3261 7.3.1).
"""

from __future__ import annotations

import re

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
token = r"[-A-Za-z0-9.!%*_+`'~]+"
# word adds ( ) < > : \ DQUOTE / [ ] ? { }
word = r"[-A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}]+"
method = token
LWS = r"[ \t]*"
SWS = LWS
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE  (UTF-8 allowed in qdtext)
quoted_string = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
SIP_Version = r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+"
# Request-Line = Method SP Request-URI SP SIP-Version CRLF
Request_Line = re.compile(rf"(?P<method>{method}) (?P<uri>[^ \x00-\x1f]+) (?P<version>{SIP_Version})")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
Status_Line = re.compile(rf"(?P<version>{SIP_Version}) (?P<status>[0-9]{{3}}) (?P<reason>[^\r\n]*)")
# message-header: field-name HCOLON field-value; HCOLON = *( SP / HTAB ) ":" SWS
header_field = re.compile(rf"(?P<name>{token}){LWS}:{LWS}(?P<value>.*)", re.DOTALL)
# folding: a CRLF followed by whitespace continues the previous line
obs_fold = re.compile(rb"\r?\n[ \t]+")
# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol = protocol-name SLASH protocol-version SLASH transport
#   sent-by = host [ COLON port ]
sent_protocol = re.compile(
    rf"(?P<name>{token}){LWS}/{LWS}(?P<version>{token}){LWS}/{LWS}(?P<transport>{token})", re.IGNORECASE
)
# host = hostname / IPv4address / IPv6reference
host = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9.])?)"
port = r"[0-9]{1,5}"
sent_by = re.compile(rf"(?P<host>{host})(?:{LWS}:{LWS}(?P<port>{port}))?")
# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string
generic_param = re.compile(rf"{LWS}(?P<name>{token}){LWS}(?:={LWS}(?P<value>{quoted_string}|{token}|{host}))?{LWS}")
# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method
CSeq = re.compile(rf"(?P<seq>[0-9]+){LWS}(?P<method>{method})")
# Call-ID = callid = word [ "@" word ]
Call_ID = re.compile(rf"{word}(?:@{word})?")
# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]  (userinfo is loosely matched)
SIP_URI = re.compile(
    rf"(?P<scheme>sips?):(?:(?P<user>[^@;?\s]+)@)?(?P<host>{host})(?::(?P<port>{port}))?(?P<params>;[^?\s]*)?(?:\?(?P<headers>\S*))?",
    re.IGNORECASE,
)
# branch magic cookie (RFC 3261 8.1.1.7)
MAGIC_COOKIE = "z9hG4bK"
